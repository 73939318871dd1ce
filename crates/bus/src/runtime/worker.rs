//! The partition worker: one task per assigned partition, feeding the partition's sink.
//!
//! Records of a partition reach its sink in offset order (so per-key order holds);
//! partitions run concurrently. Around the sink sit the layers, in this order:
//! the retry layer ([`retry`]) delivers again what failed, then the
//! dead-letter layer ([`dead_letter`](super::dead_letter)) writes what cannot be
//! delivered, and only then does the partition move past the record. With
//! [`Offsets::Stored`] the worker stores the contiguous finished offset after each batch
//! (and whoever stops the worker stores it once more, so a record stuck in its sink does
//! not hold back the records finished before it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::dead_letter::{Letters, Sent};
use super::health::ConsumerHealth;
use super::progress::Progress;
use super::retry::{self, Next, RetryPolicy};
use super::sink::{Delivery, Offsets, PartitionSink};
use crate::consumer::record::{Buffers, OwnedRecord, Recycler};
use crate::dead_letter::Failure;

/// Takes a partition off the parked list when dropped.
struct Unpark<'a> {
    health: &'a ConsumerHealth,
    topic: &'a str,
    partition: i32,
}

impl Drop for Unpark<'_> {
    fn drop(&mut self) {
        self.health.unpark(self.topic, self.partition);
    }
}

/// Marks a worker as waiting (see [`Worker::waiting`]) until dropped.
struct Waiting<'a>(&'a AtomicBool);

impl<'a> Waiting<'a> {
    fn mark(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Waiting(flag)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How long a dead letter may take before the partition is reported as waiting for it.
pub(crate) const LETTER_STALLED: std::time::Duration = std::time::Duration::from_secs(10);

/// What a worker does to the client: store its offset, pause its partition.
pub trait Client: Send + Sync + 'static {
    /// Stores `completed + 1` as the partition's next offset. Fails with ERR__STATE when
    /// the partition was revoked meanwhile: the new owner processes those records again
    /// (at least once), so the error is only logged.
    fn store_completed(&self, topic: &str, partition: i32, completed: i64);
    /// Pauses the partition in the client.
    fn pause_partition(&self, topic: &str, partition: i32);
}

impl<C: ConsumerContext + 'static> Client for StreamConsumer<C> {
    fn store_completed(&self, topic: &str, partition: i32, completed: i64) {
        if let Err(e) = self.store_offset(topic, partition, completed) {
            tracing::debug!(topic, partition, offset = completed, error = %e, "offset not stored");
        }
    }

    fn pause_partition(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Err(e) = self.pause(&tpl) {
            tracing::warn!(topic, partition, error = %e, "cannot pause partition");
        }
    }
}

/// The poll loop's handle on a partition worker.
pub(crate) struct Slot {
    /// The partition's topic, shared with its records.
    pub topic: Arc<str>,
    /// Batches of records for the worker. Unbounded as a channel; bounded in bytes by
    /// pausing the partition (see [`flow`](super::flow)).
    pub tx: mpsc::UnboundedSender<Vec<OwnedRecord>>,
    /// Records received since the last hand-off; the loop sends them as one batch once the
    /// client has nothing more ready, so a worker is woken once per batch.
    pub pending: Vec<OwnedRecord>,
    /// Bytes queued for this worker and not yet processed.
    pub bytes: Arc<AtomicUsize>,
    /// Records queued for this worker and not yet processed (counted per batch).
    pub records: Arc<AtomicUsize>,
    /// What the worker finished.
    pub progress: Arc<Progress>,
    /// Stops the worker after its current record.
    pub cancel: CancellationToken,
    /// The worker task (awaited, or aborted when it does not stop in time: its current
    /// record is then not finished, so it is processed again; no zombie outlives it).
    pub task: JoinHandle<()>,
    /// True while the partition is paused in the client.
    pub paused: bool,
    /// True once the worker ended without being stopped (see `Runtime::hand_off`): the
    /// partition stays paused and parked until it is revoked.
    pub ended: bool,
    /// Next offset expected from the client; lower ones are duplicates after a resume.
    pub next_offset: i64,
    /// The worker's [`Worker::waiting`].
    pub waiting: Arc<AtomicBool>,
}

/// On exit, however it happens (return, panic, abort): gives back the bytes of records
/// still queued.
struct ExitGuard {
    own: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    records: Arc<AtomicUsize>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.total.fetch_sub(self.own.swap(0, Ordering::AcqRel), Ordering::AcqRel);
        self.records.store(0, Ordering::Release);
    }
}

/// A partition worker, before it is spawned.
pub(crate) struct Worker<P, L: ?Sized, C: ?Sized> {
    pub sink: P,
    pub letters: Arc<L>,
    pub client: Arc<C>,
    pub offsets: Offsets,
    pub retry: RetryPolicy,
    pub health: Arc<ConsumerHealth>,
    /// Bytes queued across all workers.
    pub total: Arc<AtomicUsize>,
    /// Where spent records' buffers go back to the poll loop.
    pub recycler: Arc<Recycler>,
    pub topic: Arc<str>,
    pub partition: i32,
    /// True while the worker waits for what only an operator or a revocation ends (its
    /// partition parked, a dead letter held past [`LETTER_STALLED`]): a shutdown stops
    /// it at once instead of waiting the drain timeout for it.
    pub waiting: Arc<AtomicBool>,
}

impl<P: PartitionSink, L: Letters + ?Sized, C: Client + ?Sized> Worker<P, L, C> {
    /// Starts the worker, expecting `next_offset` first.
    pub(crate) fn spawn(self, next_offset: i64) -> Slot {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let bytes = Arc::new(AtomicUsize::new(0));
        let records = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(Progress::default());
        let guard = ExitGuard { own: bytes.clone(), total: self.total.clone(), records: records.clone() };
        let (topic, waiting) = (self.topic.clone(), self.waiting.clone());
        let task = tokio::spawn(self.run(rx, cancel.clone(), progress.clone(), guard));
        Slot { topic, tx, pending: Vec::new(), bytes, records, progress, cancel, task, paused: false, ended: false, next_offset, waiting }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Vec<OwnedRecord>>, cancel: CancellationToken, progress: Arc<Progress>, guard: ExitGuard) {
        let mut spent: Vec<Buffers> = Vec::new();
        loop {
            let mut batch = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                batch = rx.recv() => match batch {
                    Some(batch) => batch,
                    None => break,
                },
            };
            progress.expect(batch.iter().map(OwnedRecord::offset));
            let finished = self.deliver(&batch, &progress, &cancel).await;
            self.store(&progress);
            if !finished {
                break;
            }
            let size: usize = batch.iter().map(OwnedRecord::footprint).sum();
            guard.own.fetch_sub(size, Ordering::AcqRel);
            guard.total.fetch_sub(size, Ordering::AcqRel);
            guard.records.fetch_sub(batch.len(), Ordering::AcqRel);
            spent.extend(batch.drain(..).map(OwnedRecord::into_buffers));
            self.recycler.give_back(&mut spent);
            self.recycler.give_back_batch(batch);
        }
        self.store(&progress);
    }

    /// Delivers a batch through the layers. False when the worker must stop (cancelled,
    /// or parked on a dead letter that cannot be written).
    async fn deliver(&mut self, batch: &[OwnedRecord], progress: &Progress, cancel: &CancellationToken) -> bool {
        let (mut from, mut attempt, mut waits) = (0usize, 1u32, 0u32);
        while from < batch.len() {
            // A record that failed goes again alone; once it passed, the rest follows.
            let end = if attempt > 1 || waits > 0 { from + 1 } else { batch.len() };
            let (index, failure, class) = match self.sink.deliver(&batch[from..end], attempt, progress, cancel).await {
                Delivery::Done if end == batch.len() => return true,
                Delivery::Done => {
                    (from, attempt, waits) = (end, 1, 0);
                    continue;
                }
                Delivery::Interrupted => return false,
                Delivery::Failed { index, failure, class } => (from + index, failure, class),
            };
            // Records before the failed one that the sink did not finish (a rolled-back
            // transaction) go again first, without the failed one.
            let done = progress.completed();
            let resume = batch[from..index].iter().position(|r| done.is_none_or(|d| r.offset() > d)).map(|i| from + i);
            if let Some(resume) = resume {
                let before = self.sink.deliver(&batch[resume..index], 1, progress, cancel).await;
                match before {
                    Delivery::Done => {}
                    Delivery::Interrupted => return false,
                    // It failed earlier than before: start over from there.
                    Delivery::Failed { .. } => {
                        from = resume;
                        continue;
                    }
                }
            }
            from = index;
            match retry::next(&self.retry, class, attempt, &mut waits) {
                Next::Again(wait) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, offset = batch[index].offset(), attempt, error = %failure.reason, retry_in_ms = wait.as_millis() as u64, "delivery failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return false,
                    }
                    if class == super::FailureClass::Retry {
                        attempt += 1;
                    }
                }
                Next::GiveUp => {
                    let record = &batch[index];
                    match self.dead_letter(record, &failure, cancel).await {
                        Sent::Acked => {}
                        Sent::Cancelled => return false,
                        Sent::Retry => {
                            (attempt, waits) = (1, 0);
                            continue;
                        }
                        Sent::Unwritable(reason) => {
                            self.store(progress);
                            let _waiting = Waiting::mark(&self.waiting);
                            park(&*self.client, &self.health, &self.topic, self.partition, record.offset(), &failure.reason, &reason, cancel).await;
                            return false;
                        }
                    }
                    // The letter is written: only the sink's note of it is retried, so an
                    // outage of the sink's store does not write the letter again and again.
                    let mut tries = 1;
                    while let Err(failed) = self.sink.dead_lettered(record, &failure).await {
                        tracing::warn!(topic = %self.topic, partition = self.partition, offset = record.offset(), error = %failed.reason, "sink could not record a dead letter; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(self.retry.backoff(tries)) => {}
                            _ = cancel.cancelled() => return false,
                        }
                        tries += 1;
                    }
                    progress.done(record.offset());
                    from = index + 1;
                    (attempt, waits) = (1, 0);
                }
            }
        }
        true
    }

    /// Writes `record`'s dead letter. One still not written after [`LETTER_STALLED`] (its
    /// topic missing, the broker away: errors that may heal, so retried) holds the
    /// partition back: the health check reports it, with the partition as parked, until
    /// the letter is written.
    async fn dead_letter(&mut self, record: &OwnedRecord, failure: &Failure, cancel: &CancellationToken) -> Sent {
        let sending = self.letters.send(record, failure, cancel);
        tokio::pin!(sending);
        tokio::select! {
            sent = &mut sending => return sent,
            _ = tokio::time::sleep(LETTER_STALLED) => {}
        }
        let _waiting = Waiting::mark(&self.waiting);
        // Waiting on purpose (for an operator): said as such, and not a fault to report.
        if let Some(reason) = self.letters.waiting_for(record, failure) {
            tracing::warn!(topic = %self.topic, partition = self.partition, offset = record.offset(), "{reason}");
            return sending.await;
        }
        let dlq = crate::dead_letter::topic_for(&self.topic);
        tracing::error!(topic = %self.topic, partition = self.partition, offset = record.offset(), dead_letter_topic = dlq, "a dead letter is not written after {LETTER_STALLED:?}: the partition waits for it (retrying; is {dlq} missing?)");
        self.health.park(&self.topic, self.partition, format!("offset {}: its dead letter is not written after {LETTER_STALLED:?}, retrying (does {dlq} exist? the log has the error); the partition waits (record failed: {})", record.offset(), failure.reason));
        // Unparked however the wait ends, the worker aborted included.
        let _unpark = Unpark { health: &self.health, topic: &self.topic, partition: self.partition };
        sending.await
    }

    fn store(&self, progress: &Progress) {
        if self.offsets.stored_in_group()
            && let Some(done) = progress.completed()
        {
            self.client.store_completed(&self.topic, self.partition, done);
        }
    }
}

/// A record that can be neither handled nor dead-lettered: pause the partition, say so
/// (health, metric, log), and wait for revocation or shutdown. Its offset is not
/// stored, so nothing is lost: the next owner, or this consumer after a restart,
/// meets the record again (once an operator made the dead letter writable).
#[allow(clippy::too_many_arguments)]
async fn park<C: Client + ?Sized>(client: &C, health: &ConsumerHealth, topic: &str, partition: i32, offset: i64, failure: &str, reason: &str, cancel: &CancellationToken) {
    tracing::error!(topic, partition, offset, failure, error = reason, "the dead letter cannot be written: partition parked (paused, unhealthy) until an operator acts");
    metrics::counter!("herald_consumer_parked_total", "topic" => topic.to_owned()).increment(1);
    client.pause_partition(topic, partition);
    health.park(topic, partition, format!("offset {offset}: dead letter cannot be written: {reason} (record failed: {failure})"));
    cancel.cancelled().await;
    health.unpark(topic, partition);
}

