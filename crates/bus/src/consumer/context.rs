//! The rdkafka context: rebalance hooks and client errors.
//!
//! On revocation (inside librdkafka's rebalance callback) the hook stops the revoked
//! partitions' workers after their current record, waits for them up to
//! `revoke_timeout`, and stores what they finished; librdkafka then commits the stored
//! offsets before the group rebalances, so the next owner starts exactly after the last
//! handled record. A lost assignment is not committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::partition::Slot;

/// A partition: topic and number.
pub(crate) type PartitionKey = (String, i32);

/// Workers by topic, then partition (two levels, so a lookup needs no allocation).
pub(crate) type Slots = HashMap<String, HashMap<i32, Slot>>;

/// State shared by the main loop and the rebalance hooks.
pub(crate) struct Shared {
    pub partitions: Mutex<Slots>,
    /// Set once shutdown has committed and is closing the client: the revocation that
    /// closing triggers has nothing left to do (and a commit from inside
    /// `rd_kafka_consumer_close` can wait forever for its reply).
    pub closing: AtomicBool,
    pub revoke_timeout: Duration,
    pub health: Arc<ConsumerHealth>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Slots> {
        // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Live state of a consumer, for health checks and status pages.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    running: AtomicBool,
    assigned: AtomicUsize,
    poll_interval_exceeded: AtomicBool,
    pauses: std::sync::atomic::AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ConsumerHealth {
    /// True while the consumer runs and has not been dropped from its group for exceeding
    /// `max.poll.interval.ms`.
    pub fn is_healthy(&self) -> bool {
        self.running.load(Ordering::Relaxed) && !self.poll_interval_exceeded.load(Ordering::Relaxed)
    }

    /// Number of partitions currently assigned.
    pub fn assigned_partitions(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    /// The last client error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How often a partition was paused because its handler fell behind.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    pub(crate) fn count_pause(&self) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_consumer_pauses_total").increment(1);
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    pub(crate) fn record_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }
}

/// Herald's rdkafka consumer context.
pub(crate) struct Context {
    pub shared: Arc<Shared>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PollExceeded) {
            self.shared.health.poll_interval_exceeded.store(true, Ordering::Relaxed);
        }
        tracing::error!(%error, reason, "kafka client error");
        self.shared.health.record_error(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else { return };
        if self.shared.closing.load(Ordering::Acquire) {
            return;
        }
        let started = Instant::now();
        let slots: Vec<(PartitionKey, Slot)> = {
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
        for (_, slot) in &slots {
            slot.cancel.cancel();
        }
        let deadline = started + self.shared.revoke_timeout;
        for (key, slot) in slots {
            let Slot { tx, done, abort, completed, .. } = slot;
            drop(tx);
            if done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
                abort.abort();
                tracing::warn!(topic = %key.0, partition = key.1, "worker still busy at revoke deadline: aborted; the next owner processes its record again");
            }
            super::partition::store_completed(consumer, &key.0, key.1, completed.load(Ordering::Acquire));
        }
        // librdkafka commits the stored offsets of revoked partitions itself (auto-commit
        // is forced on) and waits for that commit before the group moves on; the request
        // here only makes it explicit. It is asynchronous: a synchronous commit has no
        // timeout and must never block the poll thread.
        let lost = consumer.assignment_lost();
        if !lost {
            match consumer.commit_consumer_state(CommitMode::Async) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(error = %e, "commit on revoke failed"),
            }
        }
        let remaining = revoked.count();
        let _ = self.shared.health.assigned.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(remaining)));
        tracing::info!(partitions = revoked.count(), lost, elapsed_ms = started.elapsed().as_millis() as u64, "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                // A partition paused by an earlier owner of this process must not stay paused.
                let _ = consumer.resume(assigned);
                self.shared.health.assigned.fetch_add(assigned.count(), Ordering::Relaxed);
                tracing::info!(partitions = assigned.count(), "partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::error!(error = %e, "rebalance error");
                self.shared.health.record_error(format!("rebalance error: {e}"));
            }
            Rebalance::Revoke(_) => {}
        }
    }
}
