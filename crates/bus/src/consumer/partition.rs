//! One worker task per assigned partition: records of a partition are handled one after the
//! other (so per-key order holds), partitions run concurrently.
//!
//! The worker stores a record's offset only after the record was handled, skipped by
//! policy, or written to the dead-letter topic. Since it works serially, the stored offset is
//! always the contiguous completed one. Stores are batched: the worker stores when its
//! queue runs empty, every [`STORE_EVERY`] records, and before it exits.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::record::{Buffers, OwnedRecord, Recycler};
use super::route::{Outcome, Route};
use crate::dead_letter::{self, Failure};
use crate::publisher::Publisher;

/// Records handled between two offset stores when the queue never runs empty.
const STORE_EVERY: u32 = 256;

/// The main loop's handle on a partition worker.
pub(crate) struct Slot {
    /// Batches of records for the worker. Unbounded as a channel; bounded in bytes by
    /// pausing the partition (see the consumer's module docs).
    pub tx: mpsc::UnboundedSender<Vec<OwnedRecord>>,
    /// Records received since the last hand-off; the main loop sends them as one batch
    /// once the client has nothing more ready, so a worker is woken once per batch, not
    /// once per record. Dropped unprocessed (and unstored) if the partition is revoked
    /// first.
    pub pending: Vec<OwnedRecord>,
    /// Bytes queued for this worker and not yet processed.
    pub bytes: Arc<AtomicUsize>,
    /// Offset of the last record the worker finished (-1: none yet). Whoever stops the
    /// worker stores it, so a record stuck in its handler does not hold back the stores
    /// of the records finished before it.
    pub completed: Arc<AtomicI64>,
    /// Stops the worker after its current record.
    pub cancel: CancellationToken,
    /// Signalled when the worker exits.
    pub done: std::sync::mpsc::Receiver<()>,
    /// Aborts the worker when it does not stop in time: its current record is then not
    /// stored, so it is processed again (at least once), and no zombie outlives it.
    pub abort: tokio::task::AbortHandle,
    /// True while the partition is paused in the client.
    pub paused: bool,
    /// Next offset expected from the client; lower ones are duplicates after a resume.
    pub next_offset: i64,
}

/// Where failed records go.
#[derive(Clone)]
pub(crate) struct DeadLetters {
    pub publisher: Publisher,
    pub group: String,
}

impl DeadLetters {
    /// Writes the dead-letter record, retrying until it is acknowledged (nothing is lost
    /// while the broker is away) or the worker is cancelled (then returns false and the
    /// offset is not stored, so the record is processed again later).
    async fn send(&self, msg: &OwnedRecord, failure: &Failure, cancel: &CancellationToken) -> bool {
        let record = dead_letter::record(&msg.to_message(), failure, &self.group, &dead_letter::topic_for(msg.topic()));
        if !dead_letter::send_until_acked(&self.publisher, &record, cancel).await {
            return false;
        }
        metrics::counter!("herald_consumer_dead_lettered_total", "topic" => msg.topic().to_owned(), "stage" => failure.stage.as_str()).increment(1);
        tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), stage = failure.stage.as_str(), reason = %failure.reason, "dead-lettered");
        true
    }
}

/// On exit, however it happens (return, panic, abort): gives back the bytes of records
/// still queued and tells the rebalance hook the worker is gone.
struct ExitGuard {
    done: std::sync::mpsc::SyncSender<()>,
    own: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.total.fetch_sub(self.own.swap(0, Ordering::AcqRel), Ordering::AcqRel);
        let _ = self.done.try_send(());
    }
}

/// What a worker needs besides its queue.
pub(crate) struct Worker {
    pub route: Arc<dyn Route>,
    pub consumer: Arc<StreamConsumer<Context>>,
    pub dead_letters: DeadLetters,
    /// Bytes queued across all workers.
    pub total: Arc<AtomicUsize>,
    /// Where spent records' buffers go back to the main loop.
    pub recycler: Arc<Recycler>,
}

impl Worker {
    /// Starts the worker for `topic`/`partition`, expecting `next_offset` first.
    pub(crate) fn spawn(self, topic: &str, partition: i32, next_offset: i64) -> Slot {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let cancel = CancellationToken::new();
        let bytes = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicI64::new(-1));
        let guard = ExitGuard { done: done_tx, own: bytes.clone(), total: self.total.clone() };
        let task = tokio::spawn(self.run(topic.to_owned(), partition, rx, cancel.clone(), completed.clone(), guard));
        Slot { tx, pending: Vec::new(), bytes, completed, cancel, done, abort: task.abort_handle(), paused: false, next_offset }
    }

    async fn run(
        self,
        topic: String,
        partition: i32,
        mut rx: mpsc::UnboundedReceiver<Vec<OwnedRecord>>,
        cancel: CancellationToken,
        completed: Arc<AtomicI64>,
        guard: ExitGuard,
    ) {
        let outcome_counter = |outcome: &'static str| metrics::counter!("herald_consumer_events_total", "topic" => topic.clone(), "outcome" => outcome);
        let (handled, skipped, dead_lettered) = (outcome_counter("handled"), outcome_counter("skipped"), outcome_counter("dead_lettered"));
        let mut done_offset: Option<i64> = None;
        let mut unstored = 0u32;
        let mut spent: Vec<Buffers> = Vec::new();
        'batches: loop {
            let mut batch = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                batch = rx.recv() => match batch {
                    Some(batch) => batch,
                    None => break,
                },
            };
            let last = batch.len().saturating_sub(1);
            for (i, msg) in batch.drain(..).enumerate() {
                if i > 0 && cancel.is_cancelled() {
                    break 'batches;
                }
                let counter = match self.route.process(&msg, &cancel).await {
                    Outcome::Handled => &handled,
                    Outcome::Skipped => &skipped,
                    Outcome::Failed(failure) => {
                        if !self.dead_letters.send(&msg, &failure, &cancel).await {
                            break 'batches;
                        }
                        &dead_lettered
                    }
                    Outcome::Interrupted => break 'batches,
                };
                counter.increment(1);
                let size = msg.footprint();
                guard.own.fetch_sub(size, Ordering::AcqRel);
                guard.total.fetch_sub(size, Ordering::AcqRel);
                done_offset = Some(msg.offset());
                completed.store(msg.offset(), Ordering::Release);
                unstored += 1;
                spent.push(msg.into_buffers());
                if (i == last && rx.is_empty()) || unstored >= STORE_EVERY {
                    self.store(&topic, partition, done_offset.take());
                    unstored = 0;
                }
            }
            self.recycler.give_back(&mut spent);
            self.recycler.give_back_batch(batch);
        }
        self.store(&topic, partition, done_offset);
    }

    fn store(&self, topic: &str, partition: i32, done: Option<i64>) {
        if let Some(offset) = done {
            store_completed(&*self.consumer, topic, partition, offset);
        }
    }
}

/// Stores the offset after `completed` (the last record finished). Fails with ERR__STATE
/// when the partition was revoked meanwhile: the new owner processes those records again
/// (at least once), so the error is only logged.
pub(crate) fn store_completed<C: Consumer<Context>>(consumer: &C, topic: &str, partition: i32, completed: i64) {
    if completed < 0 {
        return;
    }
    if let Err(e) = consumer.store_offset(topic, partition, completed) {
        tracing::debug!(topic, partition, offset = completed, error = %e, "offset not stored");
    }
}
