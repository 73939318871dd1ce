//! Sinks: where a partition's records go. The one part of a consumer that differs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

use super::context::Assignment;
use super::progress::Progress;
use crate::consumer::OwnedRecord;
use crate::dead_letter::Failure;

/// Who moves a partition's consumed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Offsets {
    /// The runtime stores the offset after the last record a sink reported done in
    /// [`Progress`]; librdkafka commits stored offsets every `auto.commit.interval.ms`, on
    /// revocation and at shutdown. At least once.
    #[default]
    Stored,
    /// The sink keeps positions itself (in a database transaction, or with
    /// `send_offsets_to_transaction` in a Kafka transaction): the runtime never stores
    /// offsets. It usually also sets where assigned partitions start
    /// ([`Assignment::start_at`]).
    Owned,
    /// Like [`Offsets::Owned`] (the sink keeps positions and sets where assigned
    /// partitions start), and the runtime also stores what the sink finished in the group,
    /// as [`Offsets::Stored`] does, for lag tools only: they read the group's committed
    /// offsets, and a member that keeps its positions elsewhere would look stuck.
    Mirrored,
}

impl Offsets {
    /// True when the runtime stores finished offsets in the client.
    pub fn stored_in_group(self) -> bool {
        matches!(self, Offsets::Stored | Offsets::Mirrored)
    }
}

/// How a failed delivery should be treated by the retry and dead-letter layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// May succeed if tried again: retried with backoff, up to the policy's attempts,
    /// then dead-lettered.
    Retry,
    /// Something the record needs is unavailable for now (a schema registry, a database):
    /// retried with backoff for as long as it takes, without using attempts.
    Wait,
    /// Will never succeed (undecodable, a permanent handler error): dead-lettered now.
    Permanent,
}

/// What became of a batch handed to [`PartitionSink::deliver`].
#[derive(Debug)]
pub enum Delivery {
    /// Every record of the batch is done.
    Done,
    /// The record at `index` (in the batch given) failed. Records the sink reported done
    /// through [`Progress`] stay done; the runtime delivers the others again.
    Failed {
        /// Index in the batch of the record that failed.
        index: usize,
        /// Why (stage, reason, attempts), as the dead letter will say.
        failure: Failure,
        /// How to treat it.
        class: FailureClass,
    },
    /// Stopped by the cancellation token (revocation, shutdown), or by the sink because its
    /// consumer is stopping (an engine whose input gained partitions): what was reported
    /// done stays done, the rest is delivered again by the next owner.
    Interrupted,
}

/// What a runtime feeds: opens a [`PartitionSink`] per partition and hears of
/// membership changes. Hooks have default bodies; override what you need.
///
/// Hooks run inside the rebalance on the polling thread: they may block briefly (the
/// runtime has moved off the async workers), and must return well within
/// `max.poll.interval.ms`.
pub trait Sink: Send + Sync + 'static {
    /// The per-partition worker's part.
    type Partition: PartitionSink;

    /// Who moves positions (default [`Offsets::Stored`]).
    fn offsets(&self) -> Offsets {
        Offsets::Stored
    }

    /// Called once, when the runtime's client exists: a handle for sinks that commit
    /// offsets themselves in a Kafka transaction (`send_offsets_to_transaction` needs the
    /// group metadata, taken fresh for each transaction).
    fn attach(&self, membership: Membership) {
        let _ = membership;
    }

    /// Partitions were assigned, before any of their records is fetched. Set start
    /// offsets here with [`Assignment::start_at`] (sinks with [`Offsets::Owned`]).
    fn on_assigned(&self, assignment: &mut Assignment<'_>) {
        let _ = assignment;
    }

    /// Partitions were revoked (`lost: false`, after their workers stopped and their
    /// progress was stored) or lost (`lost: true`: another member may own them already;
    /// commit nothing for them, abort what is open).
    fn on_revoked(&self, partitions: &[(String, i32)], lost: bool) {
        let _ = (partitions, lost);
    }

    /// The client reached the end of `partition` of `topic` (with
    /// `enable.partition.eof=true`); `fetched` is the offset after the last record fetched
    /// since the assignment (`None`: none was). For sinks that stop at the end of the log.
    fn on_partition_eof(&self, partition: i32, fetched: Option<i64>) {
        let _ = (partition, fetched);
    }

    /// The sink of a partition whose first record just arrived (`None`: the topic has no
    /// sink; its records are dropped with an error log).
    fn open(&self, topic: &Arc<str>, partition: i32) -> Option<Self::Partition>;
}

/// The consumer's group membership, as a sink may need it outside the rebalance hooks.
/// Holds no strong reference to the client (so it never keeps a closed consumer alive).
#[derive(Clone)]
pub struct Membership {
    metadata: Arc<dyn Fn() -> Option<ConsumerGroupMetadata> + Send + Sync>,
    committed: Arc<CommittedFn>,
}

/// How [`Membership::committed`] asks the consumer.
type CommittedFn = dyn Fn(&[(String, i32)], Duration) -> Result<Vec<Option<i64>>, KafkaError> + Send + Sync;

impl Membership {
    pub(crate) fn new(
        metadata: impl Fn() -> Option<ConsumerGroupMetadata> + Send + Sync + 'static,
        committed: impl Fn(&[(String, i32)], Duration) -> Result<Vec<Option<i64>>, KafkaError> + Send + Sync + 'static,
    ) -> Self {
        Membership { metadata: Arc::new(metadata), committed: Arc::new(committed) }
    }

    /// The group metadata now (generation, member id), for
    /// `send_offsets_to_transaction`; `None` once the consumer is gone.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        (self.metadata)()
    }

    /// The group's committed offsets of `partitions` (the next offset to read; `None`:
    /// nothing committed), in their order, as the broker has them now. Under
    /// `isolation.level=read_committed` (a transactional sink's) the broker answers only
    /// once no transaction holding offsets of these partitions is pending, so the answer
    /// tells whether a transaction whose commit timed out committed its offsets.
    ///
    /// Blocks for up to `timeout`: call it on a blocking thread. Fails when the consumer
    /// is gone or the broker does not answer in time.
    pub fn committed(&self, partitions: &[(String, i32)], timeout: Duration) -> Result<Vec<Option<i64>>, KafkaError> {
        (self.committed)(partitions, timeout)
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").finish_non_exhaustive()
    }
}

/// One partition's sink: receives the partition's records in offset order.
#[async_trait]
pub trait PartitionSink: Send + 'static {
    /// Takes a batch of the partition's records, in offset order. Report each record
    /// finished with [`Progress::done`] as soon as it is (a handler after it returned, a
    /// store after the commit). `attempt` is 1 for a first delivery and counts the retries
    /// of the batch's first record.
    ///
    /// Must stop soon after `cancel` fires (return [`Delivery::Interrupted`]).
    async fn deliver(&mut self, batch: &[OwnedRecord], attempt: u32, progress: &Progress, cancel: &CancellationToken) -> Delivery;

    /// `record` was written to the dead-letter topic (acknowledged) and will not be
    /// delivered: a sink that keeps positions moves past it here (the projector records
    /// why, in the same transaction as the position). The default does nothing: the
    /// runtime marks it done.
    async fn dead_lettered(&mut self, record: &OwnedRecord, failure: &Failure) -> Result<(), Failure> {
        let _ = (record, failure);
        Ok(())
    }
}
