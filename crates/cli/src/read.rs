//! Reading partitions directly: explicit assignment, no consumer group, no commits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use crate::context::Context;
use crate::exit::invalid;

/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long reading may go without a record before it gives up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A consumer that reads by explicit assignment.
pub type Reader = StreamConsumer<Quiet>;

/// A consumer for explicit assignment: a throw-away group id that never commits. With
/// `eof`, it reports reaching the end of each partition, so a reader knows it caught up.
pub fn consumer(ctx: &Context, eof: bool) -> anyhow::Result<Arc<Reader>> {
    let group = format!("herald-cli-{}", uuid::Uuid::new_v4().simple());
    let consumer: Reader = ctx
        .client_config(&[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", if eof { "true" } else { "false" }),
        ])
        .create_with_context(Quiet)
        .context("cannot create the consumer")?;
    Ok(Arc::new(consumer))
}

/// A client context that logs client errors through `tracing`, except reaching the end
/// of a partition, which readers ask for and handle.
#[derive(Debug, Clone, Copy)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_end_of_partition(&error) {
            tracing::error!(error = %error, "librdkafka: {reason}");
        }
    }
}

/// Reaching the end of a partition, as a consumed event or (librdkafka's error callback) as
/// a global error.
fn is_end_of_partition(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(rdkafka::error::RDKafkaErrorCode::PartitionEOF))
}


impl ConsumerContext for Quiet {}

/// The partitions of `topic`; an error naming the topic if it does not exist.
pub async fn partitions(consumer: &Arc<Reader>, topic: &str) -> anyhow::Result<Vec<i32>> {
    let c = consumer.clone();
    let name = topic.to_owned();
    let metadata = tokio::task::spawn_blocking(move || c.fetch_metadata(Some(&name), REQUEST_TIMEOUT))
        .await?
        .with_context(|| format!("cannot fetch metadata of {topic}"))?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    match found {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().iter().map(|p| p.id()).collect())
        }
        _ => invalid!("topic {topic} does not exist"),
    }
}

/// `(partition, low, high)` watermarks of each partition.
pub async fn watermarks(consumer: &Arc<Reader>, topic: &str, partitions: &[i32]) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let c = consumer.clone();
    let name = topic.to_owned();
    let partitions = partitions.to_vec();
    tokio::task::spawn_blocking(move || {
        partitions
            .into_iter()
            .map(|p| {
                let (low, high) = c
                    .fetch_watermarks(&name, p, REQUEST_TIMEOUT)
                    .with_context(|| format!("cannot fetch watermarks of {name}/{p}"))?;
                Ok((p, low, high))
            })
            .collect()
    })
    .await?
}

/// Assigns each `(partition, offset)` of `topic` to `consumer`.
pub fn assign<C: ConsumerContext>(consumer: &StreamConsumer<C>, topic: &str, start: &[(i32, Offset)]) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in start {
        tpl.add_partition_offset(topic, *partition, *offset)?;
    }
    consumer.assign(&tpl).with_context(|| format!("cannot assign {topic}"))
}

/// Reads every record of `topic` that is there now (up to the high watermarks), calling
/// `each` in arrival order (ordered within a partition).
pub async fn read_to_end<F>(ctx: &Context, topic: &str, mut each: F) -> anyhow::Result<()>
where
    F: FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
{
    let consumer = consumer(ctx, true)?;
    let partitions = partitions(&consumer, topic).await?;
    let marks = watermarks(&consumer, topic, &partitions).await?;
    // Partitions still to read, with the offset that ends them.
    let mut open: Vec<(i32, i64)> = marks.iter().filter(|(_, low, high)| high > low).map(|(p, _, high)| (*p, *high)).collect();
    if open.is_empty() {
        return Ok(());
    }
    let start: Vec<(i32, Offset)> = open.iter().map(|(p, _)| (*p, Offset::Beginning)).collect();
    assign(&consumer, topic, &start)?;
    while !open.is_empty() {
        let received = tokio::time::timeout(IDLE_TIMEOUT, consumer.recv())
            .await
            .with_context(|| format!("no record from {topic} for {IDLE_TIMEOUT:?} before reaching its end"))?;
        match received {
            Ok(msg) => {
                use rdkafka::Message as _;
                let (partition, offset) = (msg.partition(), msg.offset());
                if open.iter().any(|(p, end)| *p == partition && offset < *end) {
                    each(&msg)?;
                }
                if offset + 1 >= open.iter().find(|(p, _)| *p == partition).map_or(0, |(_, end)| *end) {
                    open.retain(|(p, _)| *p != partition);
                }
            }
            Err(KafkaError::PartitionEOF(partition)) => open.retain(|(p, _)| *p != partition),
            Err(e) => return Err(e).with_context(|| format!("cannot read {topic}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    /// librdkafka reports the end of a partition through the error callback as a global
    /// error: `herald dlq list` logged an ERROR line for it on every run.
    #[test]
    fn the_end_of_a_partition_is_no_error_in_either_form() {
        assert!(super::is_end_of_partition(&KafkaError::PartitionEOF(3)));
        assert!(super::is_end_of_partition(&KafkaError::Global(RDKafkaErrorCode::PartitionEOF)));
        assert!(!super::is_end_of_partition(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure)));
    }
}
