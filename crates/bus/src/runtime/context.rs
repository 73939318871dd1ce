//! The rdkafka context: rebalance hooks and client errors.
//!
//! On revocation (inside librdkafka's rebalance callback) the hook stops the revoked
//! partitions' workers after their current record, waits for them up to
//! `revoke_timeout`, and stores what they finished (with [`Offsets::Stored`]); librdkafka
//! then commits the stored offsets before the group rebalances, so the next owner starts
//! exactly after the last finished record. A lost assignment is not committed. The sink
//! hears of both, and of assignments, where it may choose start offsets.
//!
//! The hooks run on the thread that polls the client: a tokio worker. Their waits step
//! off it with `block_in_place`, so other tasks (the workers being waited for among
//! them) keep running.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::fatal::{self, Verdict};
use super::health::ConsumerHealth;
use super::shutdown::{self, Stopping};
use super::sink::{Offsets, Sink};
use super::worker::Slot;
use super::ConsumerError;

/// Workers by topic, then partition (two levels, so a lookup needs no allocation).
pub(crate) type Slots = HashMap<String, HashMap<i32, Slot>>;

/// State shared by the poll loop and the rebalance hooks.
pub(crate) struct Shared {
    pub partitions: Mutex<Slots>,
    /// Set once shutdown has committed and is closing the client, or once the runtime was
    /// dropped without shutting down: the revocation that closing triggers has nothing
    /// left to do (and a commit from inside `rd_kafka_consumer_close` can wait forever for
    /// its reply, as can a wait for workers no tokio runtime runs any more).
    pub closing: AtomicBool,
    pub revoke_timeout: Duration,
    pub offsets: Offsets,
    pub health: Arc<ConsumerHealth>,
    /// A condition that ends the consumer, for the poll loop to return.
    pub fatal: Mutex<Option<ConsumerError>>,
    /// Set when a client error says a topic is unknown: the loop checks the metadata.
    pub unknown_topic: AtomicBool,
    /// Topics this consumer was assigned partitions of.
    pub read_topics: Mutex<HashSet<String>>,
}

impl Shared {
    pub(crate) fn new(revoke_timeout: Duration, offsets: Offsets, health: Arc<ConsumerHealth>) -> Self {
        Shared {
            partitions: Mutex::default(),
            closing: AtomicBool::new(false),
            revoke_timeout,
            offsets,
            health,
            fatal: Mutex::new(None),
            unknown_topic: AtomicBool::new(false),
            read_topics: Mutex::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Slots> {
        // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_fatal(&self, error: ConsumerError) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if fatal.is_none() {
            tracing::error!(%error, "fatal consumer error: stopping");
            self.health.record_error(error.to_string());
            *fatal = Some(error);
        }
    }

    pub(crate) fn take_fatal(&self) -> Option<ConsumerError> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A client error event (librdkafka's error callback). Partition EOF is not an error:
    /// rust-rdkafka hands every consumer error event to the callback as well as to the
    /// poll, so each end of a partition (with `enable.partition.eof`) would otherwise be
    /// logged as an error and become the health's last error; the poll loop handles it.
    pub(crate) fn error_event(&self, error: &KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => return,
            Some(RDKafkaErrorCode::PollExceeded) => self.health.poll_interval_exceeded(),
            _ => {}
        }
        tracing::error!(%error, reason, "kafka client error");
        self.health.record_error(format!("{error}: {reason}"));
        self.client_error(error, reason);
    }

    /// Classifies a client error: fatal ones are kept for the loop to return.
    pub(crate) fn client_error(&self, error: &KafkaError, reason: &str) {
        match fatal::classify(error, reason) {
            Verdict::Fatal(e) => self.set_fatal(e),
            Verdict::UnknownTopic => self.unknown_topic.store(true, Ordering::Release),
            Verdict::Transient => {}
        }
    }
}

/// Partitions being assigned, as a [`Sink`] sees them in [`Sink::on_assigned`].
pub struct Assignment<'a> {
    tpl: &'a mut TopicPartitionList,
    group: Option<ConsumerGroupMetadata>,
}

impl Assignment<'_> {
    /// The partitions assigned: topic and number.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        self.tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
    }

    /// Starts `topic`/`partition` at `offset` instead of the group's committed offset.
    pub fn start_at(&mut self, topic: &str, partition: i32, offset: Offset) -> Result<(), KafkaError> {
        self.tpl.set_partition_offset(topic, partition, offset)
    }

    /// The consumer's group metadata, for `send_offsets_to_transaction` (take it fresh for
    /// each transaction: it carries the generation that fences zombies).
    pub fn group_metadata(&self) -> Option<&ConsumerGroupMetadata> {
        self.group.as_ref()
    }
}

/// Herald's rdkafka consumer context, generic over the sink it feeds.
pub struct Context<S> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sink: Arc<S>,
}

impl<S: Sink> ClientContext for Context<S> {
    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.error_event(&error, reason);
    }
}

impl<S: Sink> ConsumerContext for Context<S> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions = {
                    let mut assignment = Assignment { tpl, group: consumer.group_metadata() };
                    step_off_async(|| self.sink.on_assigned(&mut assignment));
                    assignment.partitions()
                };
                let assigned = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "assign failed");
                    self.shared.health.record_error(format!("assign failed: {e}"));
                }
                // A partition paused by an earlier owner in this process must not stay paused.
                let _ = consumer.resume(tpl);
                self.shared.read_topics.lock().unwrap_or_else(|p| p.into_inner()).extend(partitions.iter().map(|(t, _)| t.clone()));
                self.shared.health.add_assigned(partitions.len());
                tracing::info!(partitions = partitions.len(), "partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, tpl);
                let unassigned = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = unassigned {
                    tracing::warn!(error = %e, "unassign failed");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(error = %code, "rebalance error");
                self.shared.health.record_error(format!("rebalance error: {code}"));
                self.revoke(consumer, tpl);
                let _ = consumer.unassign();
            }
        }
    }
}

impl<S: Sink> Context<S> {
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        if self.shared.closing.load(Ordering::Acquire) {
            return;
        }
        let started = std::time::Instant::now();
        let lost = consumer.assignment_lost();
        let slots: Vec<((String, i32), Slot)> = {
            let mut partitions = self.shared.lock();
            revoked
                .elements()
                .iter()
                .filter_map(|e| {
                    let slot = partitions.get_mut(e.topic())?.remove(&e.partition())?;
                    Some(((e.topic().to_owned(), e.partition()), slot))
                })
                .collect()
        };
        let mut progress = Vec::with_capacity(slots.len());
        let mut stopping = Vec::with_capacity(slots.len());
        for (key, slot) in slots {
            let Slot { tx, cancel, task, progress: p, ended, .. } = slot;
            drop(tx);
            if ended {
                // Parked when its worker ended (see `Runtime::hand_off`): the next owner
                // takes it from its stored offset.
                self.shared.health.unpark(&key.0, key.1);
            }
            progress.push((key, p));
            stopping.push(Stopping { cancel, task });
        }
        let revoke_timeout = self.shared.revoke_timeout;
        let drained = step_off_async(|| match tokio::runtime::Handle::try_current() {
            Ok(handle) => Some(handle.block_on(shutdown::cancel(stopping, tokio::time::Instant::now() + revoke_timeout))),
            Err(_) => None,
        });
        if drained.is_some_and(|d| d.aborted > 0) {
            tracing::warn!("a worker was still busy at the revoke deadline: aborted; the next owner processes its record again");
        }
        if self.shared.offsets.stored_in_group() && !lost {
            for ((topic, partition), p) in &progress {
                if let Some(done) = p.completed()
                    && let Err(e) = consumer.store_offset(topic, *partition, done)
                {
                    tracing::debug!(topic, partition, error = %e, "offset not stored on revoke");
                }
            }
            // librdkafka commits the stored offsets of revoked partitions itself (auto-commit
            // is on) and waits for that commit before the group moves on; the request here
            // only makes it explicit. It is asynchronous: a synchronous commit has no timeout
            // and must never block the poll thread.
            match consumer.commit_consumer_state(CommitMode::Async) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(error = %e, "commit on revoke failed"),
            }
        }
        let partitions: Vec<(String, i32)> = revoked.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        step_off_async(|| self.sink.on_revoked(&partitions, lost));
        self.shared.health.remove_assigned(revoked.count());
        tracing::info!(partitions = revoked.count(), lost, elapsed_ms = started.elapsed().as_millis() as u64, "partitions revoked");
    }
}

/// Runs `f`, which may block, without blocking a tokio worker: on a multi-threaded
/// runtime's worker it moves the worker's other tasks elsewhere first
/// (`block_in_place`); elsewhere (a blocking thread, no runtime) it just runs `f`.
pub(crate) fn step_off_async<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(Duration::from_secs(1), Offsets::Stored, Arc::new(ConsumerHealth::default()))
    }

    #[test]
    fn the_end_of_a_partition_is_not_a_client_error() {
        let shared = shared();
        shared.health.set_running(true);
        shared.error_event(&KafkaError::Global(RDKafkaErrorCode::PartitionEOF), "Fetch from broker 1 reached end of partition at offset 42");
        assert_eq!(shared.health.last_error(), None);
        assert!(shared.health.is_healthy());
        assert!(shared.take_fatal().is_none());
    }

    #[test]
    fn other_client_errors_are_recorded() {
        let shared = shared();
        shared.error_event(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "127.0.0.1:9092/1: Disconnected");
        let last = shared.health.last_error().expect("recorded");
        assert!(last.contains("Disconnected"), "{last}");
        shared.health.set_running(true);
        assert!(shared.health.is_healthy());
        shared.error_event(&KafkaError::Global(RDKafkaErrorCode::PollExceeded), "max.poll.interval.ms exceeded");
        assert!(!shared.health.is_healthy(), "a poll interval exceeded makes the consumer unhealthy");
    }
}
