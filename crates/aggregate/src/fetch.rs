//! Reading records of an event topic by partition and offset: one consumer with explicit
//! assignment (no group, no commits), `read_committed`, reporting the end of a partition.
//!
//! Wanted offsets are read in runs: offsets closer than [`GAP`] to each other are read
//! through (one fetch), a larger gap is a new assignment at the next wanted offset. Every
//! record the consumer hands over is counted ([`Fetcher::records_read`]), wanted or not,
//! so a test or a benchmark can see that a stream was read by index, not by a scan.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald_bus::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::store::ReadError;

/// Offsets at most this far apart are read through rather than assigned anew.
pub const GAP: i64 = 32;

/// How long a read may wait for the next record before it fails.
const IDLE: Duration = Duration::from_secs(30);

/// The reader of one topic. Not shared between concurrent reads (the event store holds
/// it behind a lock): each read re-assigns it.
pub(crate) struct Fetcher {
    consumer: StreamConsumer<Quiet>,
    topic: String,
    read: AtomicU64,
}

impl Fetcher {
    /// A reader of `topic`.
    pub(crate) fn new(config: &KafkaConfig, topic: &str) -> Result<Self, ReadError> {
        let group = format!("herald-aggregate-reader-{}", uuid::Uuid::now_v7().simple());
        let consumer: StreamConsumer<Quiet> = config
            .client_config(&[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "10"),
                // Little prefetch: an index read wants a few records, not megabytes.
                ("fetch.max.bytes", "1048576"),
                ("max.partition.fetch.bytes", "262144"),
                ("queued.max.messages.kbytes", "4096"),
            ])
            .create_with_context(Quiet)
            .map_err(kafka)?;
        Ok(Fetcher { consumer, topic: topic.to_owned(), read: AtomicU64::new(0) })
    }

    /// Records handed over by the consumer so far (wanted or not).
    pub(crate) fn records_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn assign(&self, partition: i32, offset: i64) -> Result<(), ReadError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset)).map_err(kafka)?;
        self.consumer.assign(&tpl).map_err(kafka)
    }

    /// The next record of `partition` at or after `from`, or `None` at the partition's end.
    async fn next(&self, partition: i32, from: i64) -> Result<Option<OwnedMessage>, ReadError> {
        loop {
            let received = tokio::time::timeout(IDLE, self.consumer.recv()).await.map_err(|_| ReadError::Kafka(format!("no record from {}/{partition} for {IDLE:?}", self.topic)))?;
            match received {
                // Records of an earlier assignment still queued are not this read's.
                Ok(m) if m.partition() != partition || m.offset() < from => continue,
                Ok(m) => {
                    self.read.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(m.detach()));
                }
                Err(KafkaError::PartitionEOF(p)) if p == partition => return Ok(None),
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => return Err(kafka(e)),
            }
        }
    }

    /// The records at `offsets` (ascending) of `partition`, in order. A wanted offset that
    /// is not there (deleted by retention, or an aborted record) is [`ReadError::Missing`].
    pub(crate) async fn at_offsets(&self, partition: i32, offsets: &[i64]) -> Result<Vec<OwnedMessage>, ReadError> {
        let mut out = Vec::with_capacity(offsets.len());
        let mut i = 0;
        while i < offsets.len() {
            // A run: the following offsets within GAP of their predecessor.
            let start = offsets[i];
            let mut end = i;
            while end + 1 < offsets.len() && offsets[end + 1] - offsets[end] <= GAP {
                end += 1;
            }
            self.assign(partition, start)?;
            let mut wanted = offsets[i..=end].iter().copied().peekable();
            while let Some(&next) = wanted.peek() {
                let Some(m) = self.next(partition, start).await? else { return Err(ReadError::Missing { partition, offset: next }) };
                if m.offset() > next {
                    return Err(ReadError::Missing { partition, offset: next });
                }
                if m.offset() == next {
                    wanted.next();
                    out.push(m);
                }
            }
            i = end + 1;
        }
        Ok(out)
    }

    /// Every record of `partition` from `from` to its end (the last stable offset), each
    /// passed to `keep`, which says whether to keep it; at most `max` kept.
    pub(crate) async fn to_end(&self, partition: i32, from: i64, max: usize, mut keep: impl FnMut(&OwnedMessage) -> bool) -> Result<Vec<OwnedMessage>, ReadError> {
        self.assign(partition, from)?;
        let mut out = Vec::new();
        while out.len() < max {
            match self.next(partition, from).await? {
                Some(m) => {
                    if keep(&m) {
                        out.push(m);
                    }
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// The partitions of the topic, `None` when it does not exist.
    pub(crate) async fn partitions(&self, config: &KafkaConfig) -> Result<Option<usize>, ReadError> {
        herald_bus::admin::partition_count(config, &self.topic).await.map_err(|e| ReadError::Kafka(e.to_string()))
    }
}

/// A client context that logs client errors through `tracing`, except reaching the end of
/// a partition, which the reads ask for and handle.
pub(crate) struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)) {
            tracing::error!(error = %error, "librdkafka: {reason}");
        }
    }
}

impl ConsumerContext for Quiet {}

fn kafka(e: KafkaError) -> ReadError {
    ReadError::Kafka(e.to_string())
}
