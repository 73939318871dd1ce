//! Kafka's own `kafka-producer-perf-test` (Java client) on the same broker, for scale.

use std::path::Path;
use std::process::Command;

/// Settings given to the Java producer: Herald's essentials (`acks=all`, idempotence,
/// `linger.ms=5`); everything else stays at the Java client's defaults.
pub const PROPERTIES: &[&str] = &["acks=all", "enable.idempotence=true", "linger.ms=5"];

/// The result of one perf-test run, from its summary line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerfTestRun {
    /// Records sent.
    pub records: u64,
    /// Records per second.
    pub rate: f64,
    /// MiB per second (of record values).
    pub mib_per_sec: f64,
    /// Average latency in milliseconds.
    pub avg_latency_ms: f64,
}

/// The command line for `records` records of `record_size` bytes with keys
/// `0..records` (round-robin, so records spread over partitions like keyed events do).
pub fn command_line(script: &Path, bootstrap: &str, topic: &str, records: u64, record_size: usize) -> Vec<String> {
    let mut args = vec![
        script.display().to_string(),
        "tool".into(),
        "kafka-producer-perf-test".into(),
        "--bootstrap-server".into(),
        bootstrap.into(),
        "--topic".into(),
        topic.into(),
        "--num-records".into(),
        records.to_string(),
        "--record-size".into(),
        record_size.to_string(),
        "--throughput".into(),
        "-1".into(),
        "--key-distribution".into(),
        "range".into(),
        "--record-key-range".into(),
        records.to_string(),
        "--command-property".into(),
    ];
    args.extend(PROPERTIES.iter().map(|p| (*p).to_owned()));
    args
}

/// Runs the command line (blocking) and parses its summary.
pub fn run(args: &[String]) -> Result<PerfTestRun, crate::Error> {
    let (program, rest) = args.split_first().ok_or("empty command line")?;
    let output = Command::new(program).args(rest).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("kafka-producer-perf-test failed ({}): {}{}", output.status, stdout, String::from_utf8_lossy(&output.stderr)).into());
    }
    stdout.lines().rev().find_map(parse_summary).ok_or_else(|| format!("no summary line in: {stdout}").into())
}

/// Parses `N records sent, R records/sec (M MB/sec), L ms avg latency, ...`.
pub fn parse_summary(line: &str) -> Option<PerfTestRun> {
    let (records, rest) = line.trim().split_once(" records sent, ")?;
    let (rate, rest) = rest.split_once(" records/sec (")?;
    let (mib, rest) = rest.split_once(" MB/sec), ")?;
    let (latency, _) = rest.split_once(" ms avg latency")?;
    Some(PerfTestRun {
        records: records.trim().parse().ok()?,
        rate: rate.trim().parse().ok()?,
        mib_per_sec: mib.trim().parse().ok()?,
        avg_latency_ms: latency.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_line() {
        let line = "200000 records sent, 95693.8 records/sec (18.25 MB/sec), 812.34 ms avg latency, 1502.00 ms max latency, 790 ms 50th, 1400 ms 95th, 1480 ms 99th, 1500 ms 99.9th.";
        assert_eq!(parse_summary(line), Some(PerfTestRun { records: 200_000, rate: 95693.8, mib_per_sec: 18.25, avg_latency_ms: 812.34 }));
        // Progress lines ("... records sent, ... ms max latency.") parse too; `run` takes the last.
        let progress = parse_summary("51234 records sent, 10246.8 records/sec (1.95 MB/sec), 1.2 ms avg latency, 20.0 ms max latency.");
        assert_eq!(progress.map(|r| r.records), Some(51234));
        assert_eq!(parse_summary("not a summary"), None);
    }

    #[test]
    fn command_line_uses_the_non_deprecated_flags() {
        let args = command_line(Path::new("scripts/kafka"), "127.0.0.1:9092", "t", 10, 200);
        assert!(args.contains(&"--command-property".to_owned()) && !args.contains(&"--producer-props".to_owned()));
        assert_eq!(&args[args.len() - PROPERTIES.len()..], PROPERTIES);
    }
}
