//! `herald tail`: print a topic's records, decoded.
//!
//! Without `--group`, every partition of the topic is assigned explicitly (at the
//! beginning with `--from-beginning`, else at the end) and nothing is committed. With
//! `--group G`, the topic is consumed in group `G` (starting from its committed offsets,
//! or as above when it has none) and the offset of each printed record is committed.
//!
//! Records that cannot be decoded are printed with the reason; they never stop the tail.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::Offset;

use crate::context::{shutdown_signal, Context};
use crate::read;
use crate::record::Decoded;
use crate::exit::outln;

/// Arguments of `herald tail`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topic to read.
    pub topic: String,
    #[command(flatten)]
    pub registry: crate::context::RegistryArgs,
    /// Start at the oldest record instead of the end.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Stop when no record arrived for this many seconds, fractions allowed (default: run
    /// until ctrl-c or SIGTERM, or until --limit).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// One JSON object per line: id, type, source, subject, time, key, partition, offset,
    /// headers (a list of {"key", "value"}, in record order), data (and error, for records
    /// that did not decode).
    #[arg(long)]
    pub json: bool,
    /// Consume in this consumer group and commit what was printed.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
}

/// `--timeout`: a finite, non-negative number of seconds that fits a [`Duration`]; anything
/// else (`inf`, `NaN`, `-1`, `1e20`) is a usage error (exit code 2).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a usable number of seconds (expected a finite number from 0 to {})", u64::MAX))
}

/// Tails the topic until the limit, the idle timeout, or a signal.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let payloads = ctx.payloads(&args.registry)?;
    let idle = args.timeout;
    let consumer = match &args.group {
        None => {
            let consumer = read::consumer(ctx, false)?;
            let partitions = read::partitions(&consumer, &args.topic).await?;
            let start = if args.from_beginning { Offset::Beginning } else { Offset::End };
            let assignment: Vec<_> = partitions.iter().map(|p| (*p, start)).collect();
            read::assign(&consumer, &args.topic, &assignment)?;
            consumer
        }
        Some(group) => {
            let reset = if args.from_beginning { "earliest" } else { "latest" };
            let consumer: read::Reader = ctx
                .client_config(&[
                    ("auto.offset.reset", reset),
                    ("enable.auto.commit", "true"),
                    ("auto.commit.interval.ms", "1000"),
                ])
                .set("group.id", group)
                .set("enable.auto.offset.store", "false")
                .create_with_context(read::Quiet)
                .context("cannot create the consumer")?;
            let consumer = std::sync::Arc::new(consumer);
            // As without a group: a topic that does not exist is bad input (exit 2), not
            // a subscription that waits for it for ever.
            read::partitions(&consumer, &args.topic).await?;
            consumer.subscribe(&[&args.topic]).with_context(|| format!("cannot subscribe to {}", args.topic))?;
            consumer
        }
    };

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut seen = 0u64;
    while args.limit.is_none_or(|limit| seen < limit) {
        let next = async {
            match idle {
                Some(idle) => tokio::time::timeout(idle, consumer.recv()).await.ok(),
                None => Some(consumer.recv().await),
            }
        };
        let received = tokio::select! {
            _ = &mut shutdown => break,
            received = next => received,
        };
        let Some(received) = received else { break }; // idle timeout
        match received {
            Ok(msg) => {
                let decoded = Decoded::read(&payloads, &msg).await;
                outln!("{}", if args.json { decoded.json_line() } else { decoded.line() });
                seen += 1;
                if args.group.is_some()
                    && let Err(e) = consumer.store_offset_from_message(&msg)
                {
                    tracing::warn!(error = %e, "cannot store offset");
                }
            }
            Err(KafkaError::PartitionEOF(_)) => {}
            Err(e) => tracing::warn!(error = %e, "consumer error"),
        }
    }
    if args.group.is_some() {
        let c = consumer.clone();
        match tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await? {
            Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => return Err(e).context("committing offsets"),
        }
        let c = consumer.clone();
        tokio::task::spawn_blocking(move || c.unsubscribe()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_finite_non_negative_seconds() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["inf", "-inf", "NaN", "-1", "1e20", "ten", ""] {
            let err = parse_seconds(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
