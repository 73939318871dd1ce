//! One timed run of the reaction step: a system reads the pre-loaded input and emits one
//! output per input; a read_committed reader counts the outputs.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::process::{Child, Command};

use super::proc;

/// Who runs the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// Herald's engine, exactly once.
    HeraldEos,
    /// Herald's engine, at least once.
    HeraldAlo,
    /// Herald's engine, exactly once, pipelined, the size bound out of the way: the
    /// transaction holds what arrives during the commit interval, as Kafka Streams'.
    HeraldPipelined,
    /// Kafka Streams, `exactly_once_v2`.
    StreamsEos,
    /// Kafka Streams, `at_least_once`.
    StreamsAlo,
}

impl System {
    /// Its name in tables.
    pub fn label(self) -> &'static str {
        match self {
            System::HeraldEos => "Herald exactly once",
            System::HeraldAlo => "Herald at least once",
            System::HeraldPipelined => "Herald exactly once, pipelined",
            System::StreamsEos => "Kafka Streams exactly_once_v2",
            System::StreamsAlo => "Kafka Streams at_least_once",
        }
    }

    /// Parses `herald-eos`, `herald-alo`, `streams-eos`, `streams-alo`.
    pub fn parse(s: &str) -> Result<System, String> {
        Ok(match s {
            "herald-eos" => System::HeraldEos,
            "herald-alo" => System::HeraldAlo,
            "herald-pipelined" => System::HeraldPipelined,
            "streams-eos" => System::StreamsEos,
            "streams-alo" => System::StreamsAlo,
            other => return Err(format!("unknown system {other}")),
        })
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Outputs per second from the 10 % mark to the last output.
    pub rate: f64,
    /// CPU seconds of the system's process per 1000 events over the same span.
    pub cpu_ms_per_k: f64,
    /// Busy CPU seconds of the whole machine per 1000 events over the same span.
    pub machine_ms_per_k: f64,
    /// Outputs seen (after a quiet second): the input count when exactly once held.
    pub outputs: u64,
}

/// What a run needs.
pub struct Plan<'a> {
    /// Bootstrap servers.
    pub bootstrap: &'a str,
    /// The pre-loaded input topic.
    pub input: &'a str,
    /// Its event count.
    pub events: u64,
    /// Partitions of the output topic.
    pub partitions: i32,
    /// Commit interval.
    pub commit_ms: u64,
    /// Herald's largest transaction.
    pub max_batch: usize,
    /// Herald's largest transaction, pipelined.
    pub pipelined_max_batch: usize,
    /// Kafka Streams' `num.stream.threads`.
    pub threads: usize,
    /// Gives up after this long.
    pub deadline: Duration,
}

/// Outputs seen; (time, outputs, process CPU, machine CPU) at the 10 % mark; (time,
/// process CPU, machine CPU) at the last output.
type Counted = (u64, Option<(Instant, u64, f64, f64)>, Option<(Instant, f64, f64)>);

fn spawn(system: System, plan: &Plan<'_>, group: &str, output: &str) -> std::io::Result<Child> {
    let mut command = match system {
        System::HeraldEos | System::HeraldAlo | System::HeraldPipelined => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["serve", "--bootstrap", plan.bootstrap, "--input", plan.input, "--output", output, "--group", group]);
            let max_batch = if system == System::HeraldPipelined { plan.pipelined_max_batch } else { plan.max_batch };
            c.args(["--commit-ms", &plan.commit_ms.to_string(), "--max-batch", &max_batch.to_string()]);
            match system {
                System::HeraldAlo => c.arg("--at-least-once"),
                System::HeraldPipelined => c.arg("--pipeline"),
                _ => &mut c,
            };
            c
        }
        System::StreamsEos | System::StreamsAlo => {
            let guarantee = if system == System::StreamsEos { "exactly_once_v2" } else { "at_least_once" };
            let mut c = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/kstreams/run"));
            c.args(["exec", plan.bootstrap, group, plan.input, output, &plan.commit_ms.to_string(), guarantee, &plan.threads.to_string()]);
            c
        }
    };
    command.stdout(Stdio::null()).kill_on_drop(true).spawn()
}

/// Runs `system` once on a fresh output topic and group; returns the measurement.
pub async fn run(system: System, plan: &Plan<'_>, group: &str, output: &str) -> Result<Run, herald_bench::Error> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", plan.bootstrap)
        .set("group.id", format!("{group}.reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..plan.partitions {
        tpl.add_partition_offset(output, p, Offset::Beginning)?;
    }
    reader.assign(&tpl)?;
    let mut child = spawn(system, plan, group, output)?;
    let pid = child.id().ok_or("the system exited at once")?;
    let n = plan.events;
    let mark = n / 10;
    let limit = plan.deadline;
    let (count, marked, ended) = tokio::task::spawn_blocking(move || -> Result<Counted, String> {
        let started = Instant::now();
        let deadline = started + limit;
        let (mut count, mut marked, mut ended) = (0u64, None, None);
        let mut quiet_until = None;
        loop {
            let now = Instant::now();
            if now > deadline {
                return Err(format!("{count} of {n} outputs within {:?}", deadline - started));
            }
            if quiet_until.is_some_and(|q| now > q) {
                break;
            }
            match reader.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    if m.payload().is_some() {
                        count += 1;
                    }
                    if marked.is_none() && count >= mark {
                        marked = Some((Instant::now(), count, proc::cpu_seconds(pid), proc::machine_seconds()));
                    }
                    if ended.is_none() && count >= n {
                        ended = Some((Instant::now(), proc::cpu_seconds(pid), proc::machine_seconds()));
                        quiet_until = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => {}
            }
        }
        Ok((count, marked, ended))
    })
    .await??;
    stop(&mut child).await;
    let ((t0, c0, cpu0, m0), (t1, cpu1, m1)) = (marked.ok_or("no mark")?, ended.ok_or("no end")?);
    let events = (n - c0) as f64;
    Ok(Run { rate: events / (t1 - t0).as_secs_f64(), cpu_ms_per_k: (cpu1 - cpu0) * 1e6 / events, machine_ms_per_k: (m1 - m0) * 1e6 / events, outputs: count })
}

/// SIGTERM (an orderly stop), then SIGKILL after 30 s.
pub async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
