//! The projector's sink: records go to the store thread in transactions that move the
//! partition's position with them.
//!
//! On assignment the sink reads the stored positions and starts each partition there (or
//! at the beginning of the log when none is stored); the group's committed offsets are
//! never used to resume, only mirrored for lag tools ([`Offsets::Mirrored`]). Each
//! delivered batch becomes one store transaction per `max_batch` records: compare-and-set
//! of the position from where the batch starts to where it ends, then the events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_bus::codec::Codec;
use herald_bus::consumer::OwnedRecord;
use herald_bus::dead_letter::{Failure, Stage};
use herald_bus::runtime::{Assignment, Delivery, FailureClass, Offsets, PartitionSink, Progress, Sink};
use herald_bus::EventFamily;
use rdkafka::Offset;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::board::{Block, Board};
use super::policy::{StopAt, Stopped};
use crate::batch::{Action, Batch, Item, Outcome, Slice};
use crate::position::{self, Key};
use crate::store::{Connection, Store, StoreError};
use crate::worker::{Applied, Job, Ownership};

/// A delivered batch goes to the store thread in about this many chunks (of
/// `max_batch / CHUNKS` records), so that decoding one overlaps applying the one before.
const CHUNKS: usize = 8;

/// What the sink and its partitions share.
pub(crate) struct Shared<F> {
    pub key: Key,
    pub store: Arc<dyn Store>,
    /// The rebalance hook's connection for reading positions.
    pub reader: Mutex<Option<Box<dyn Connection>>>,
    pub ownership: Ownership,
    pub generation: AtomicU64,
    pub jobs: std_mpsc::Sender<Job<F>>,
    pub board: Arc<Board>,
    pub codec: Arc<dyn Codec>,
    pub stop_at: StopAt,
    pub max_batch: usize,
    /// Wakes the projector when it must stop by itself.
    pub stop: Arc<Notify>,
    /// The log's ends, to tell records deleted before they were applied.
    pub watermarks: Arc<crate::status::Watermarks>,
    #[cfg(feature = "crash-points")]
    pub crash: Option<Arc<crate::crash::CrashPoint>>,
}

impl<F> Shared<F> {
    fn read_positions(&self) -> Result<HashMap<i32, i64>, StoreError> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            *reader = Some(self.store.connect()?);
        }
        let Some(conn) = reader.as_mut() else { return Err(StoreError::Connect("no connection".into())) };
        let read = (|| {
            let mut tx = conn.read()?;
            let positions = position::load(tx.as_tx(), &self.key)?;
            tx.rollback()?;
            Ok(positions)
        })();
        if read.is_err() {
            *reader = None;
        }
        read
    }

    /// Sends `job` to the store thread and waits for its answer. `None`: the store thread
    /// is gone (see [`Shared::store_gone`]).
    async fn job<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> Job<F>) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).ok()?;
        rx.await.ok()
    }

    /// The store thread is gone: it took a job and dropped its reply, or no longer takes
    /// jobs, which only a panic outside the projection's code does (it answers every job,
    /// and stops only when every sender is dropped). Nothing can be applied any more: a
    /// fatal error, which ends the projector's run with an error (not a revocation, after
    /// which the partition would wait forever for the next owner).
    fn store_gone(&self) -> Delivery {
        tracing::error!("the store thread is gone; stopping the projector");
        self.board.fail("a job went unanswered".to_owned());
        self.stop.notify_one();
        Delivery::Interrupted
    }
}

/// The [`Sink`] of a projector.
pub(crate) struct ProjectorSink<F> {
    pub shared: Arc<Shared<F>>,
}

impl<F: EventFamily> Sink for ProjectorSink<F> {
    type Partition = ProjectorPartition<F>;

    fn offsets(&self) -> Offsets {
        Offsets::Mirrored
    }

    fn on_assigned(&self, assignment: &mut Assignment<'_>) {
        let shared = &self.shared;
        let positions = shared.read_positions();
        if let Err(e) = &positions {
            tracing::error!(error = %e, "cannot read positions on assignment; each partition reads its own before applying anything");
        }
        let mut owned = shared.ownership.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in assignment.partitions() {
            let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
            owned.insert(partition, generation);
            let position = positions.as_ref().ok().map(|p| p.get(&partition).copied());
            // Unknown positions start at the beginning; the partition skips to its stored
            // position before applying anything (and compare-and-set fences the rest).
            let start = match position {
                Some(Some(next)) => Offset::Offset(next),
                _ => Offset::Beginning,
            };
            if let Err(e) = assignment.start_at(&topic, partition, start) {
                tracing::error!(error = %e, partition, "cannot set the start offset");
            }
            shared.board.assign(partition, position.flatten());
            tracing::info!(partition, ?position, "partition assigned");
        }
    }

    fn on_revoked(&self, partitions: &[(String, i32)], lost: bool) {
        let mut owned = self.shared.ownership.lock().unwrap_or_else(|p| p.into_inner());
        for (_, partition) in partitions {
            owned.remove(partition);
            self.shared.board.revoke(*partition);
        }
        tracing::info!(partitions = partitions.len(), lost, "partitions revoked");
    }

    fn on_partition_eof(&self, partition: i32, fetched: Option<i64>) {
        self.shared.board.with(partition, |p| {
            p.eof = Some(fetched);
            // The end of the log is known now: what was fetched, or where it started.
            let end = fetched.or(p.position).unwrap_or(0);
            p.end = Some(p.end.map_or(end, |e| e.max(end)));
        });
    }

    fn open(&self, _topic: &Arc<str>, partition: i32) -> Option<ProjectorPartition<F>> {
        let generation = self.shared.ownership.lock().unwrap_or_else(|p| p.into_inner()).get(&partition).copied().unwrap_or(0);
        // A position the assignment read is known; none (nothing stored, or the read
        // failed) is read from the store before anything is applied: taken as "nothing
        // applied", a failed read restarted the partition from the beginning of the log,
        // and a dead letter met again there could never be recorded (fenced each time).
        let position = self.shared.board.lock().get(&partition).and_then(|p| p.position).map(Some);
        Some(ProjectorPartition { shared: self.shared.clone(), partition, generation, position, start_checked: false })
    }
}

/// One partition of a projector.
pub(crate) struct ProjectorPartition<F> {
    shared: Arc<Shared<F>>,
    partition: i32,
    generation: u64,
    /// Stored next offset as this partition last saw it (`Some(None)`: nothing applied
    /// yet; `None`: unknown, read from the store before anything is applied).
    position: Option<Option<i64>>,
    /// Whether the first record after the stored position was checked against the log's
    /// start ([`ProjectorPartition::check_start`]).
    start_checked: bool,
}

impl<F: EventFamily> ProjectorPartition<F> {
    fn past_stop(&self, record: &OwnedRecord) -> bool {
        let stop = self.shared.board.lock().get(&self.partition).and_then(|p| p.stop).map(|s| s.offset);
        let before = match (&self.shared.stop_at, record.timestamp().to_millis()) {
            (StopAt::Before(limit), Some(ts)) => ts < *limit,
            _ => true,
        };
        stop.is_some_and(|s| record.offset() >= s) || !before
    }

    /// Runs one transaction of `items` (Apply or Skip) ending at `to`. `None`: the store
    /// thread is gone.
    async fn transact(&mut self, items: Vec<(Arc<Item<F>>, Action)>, to: i64) -> Option<Outcome> {
        let from = self.position.flatten();
        let (outcome, _batch) = self.send(items, from, to)?.await.ok()?;
        Some(outcome)
    }

    /// Hands `items` (moving the position from `from` to `to`) to the store thread; the
    /// outcome arrives on the receiver, with the batch (dropped by the receiver, on the
    /// task that decoded it). `None`: the store thread is gone.
    fn send(&self, items: Vec<(Arc<Item<F>>, Action)>, from: Option<i64>, to: i64) -> Option<oneshot::Receiver<Applied<F>>> {
        let batch = Batch { slices: vec![Slice { partition: self.partition, generation: self.generation, from, to, items }] };
        let (tx, rx) = oneshot::channel();
        self.shared.jobs.send(Job::Apply(batch, tx)).ok()?;
        Some(rx)
    }

    /// The first record after stored position `p` is further on: either offsets that hold
    /// no record (transaction markers, compaction), or records deleted from the log
    /// (retention, `kafka-delete-records`) before this projection applied them, which
    /// librdkafka skips when it finds the position out of range. The latter is said, not
    /// skipped silently: an error on `/status` and `/health`, the log, and
    /// `herald_projector_deleted_unapplied_total`. The view misses those events; only a
    /// rebuild from what the log still has makes it consistent again (with the log).
    async fn check_start(&self, p: i64) {
        let watermarks = self.shared.watermarks.clone();
        let fetched = tokio::task::spawn_blocking(move || watermarks.fetch()).await;
        let ends = match fetched.map_err(|e| e.to_string()).and_then(|f| f.map_err(|e| e.to_string())) {
            Ok(ends) => ends,
            Err(e) => return tracing::warn!(partition = self.partition, error = %e, "cannot read the log's start to check for records deleted before they were applied"),
        };
        let Some(&(low, _)) = ends.get(&self.partition) else { return };
        if low <= p {
            return;
        }
        let deleted = low - p;
        let reason = format!(
            "records {p} to {} were deleted from the log (retention or kafka-delete-records) before this projection applied them: the view misses {deleted} records; rebuild it to make it match the log again",
            low - 1
        );
        tracing::error!(partition = self.partition, position = p, log_start = low, "{reason}");
        metrics::counter!("herald_projector_deleted_unapplied_total", "projection" => self.shared.key.projection.clone()).increment(deleted as u64);
        self.shared.board.error(self.partition, reason);
    }

    fn failed(&self, index: usize, stage: Stage, reason: String, attempts: u32, class: FailureClass) -> Delivery {
        let block = match class {
            FailureClass::Permanent => None,
            _ => Some(Block::Retrying(reason.clone())),
        };
        self.shared.board.error(self.partition, reason.clone());
        self.shared.board.with(self.partition, |p| p.block = block);
        Delivery::Failed { index, failure: Failure { stage, reason, attempts }, class }
    }
}

#[async_trait]
impl<F: EventFamily> PartitionSink for ProjectorPartition<F> {
    async fn deliver(&mut self, batch: &[OwnedRecord], attempt: u32, progress: &Progress, _cancel: &CancellationToken) -> Delivery {
        if self.position.is_none() {
            let partition = self.partition;
            match self.shared.job(|tx| Job::Position(partition, tx)).await {
                Some(Ok(position)) => {
                    self.position = Some(position);
                    self.shared.board.with(partition, |p| p.position = position);
                }
                Some(Err(e)) => return self.failed(0, Stage::Unavailable, format!("store: {e}"), 0, FailureClass::Wait),
                None => return self.shared.store_gone(),
            }
        }
        let mut start = 0;
        while start < batch.len() {
            // Records below the stored position were applied already (by us, or by the
            // member that fenced us).
            let position = self.position.flatten();
            let mut end = start;
            while end < batch.len() && position.is_some_and(|p| batch[end].offset() < p) {
                progress.done(batch[end].offset());
                end += 1;
            }
            start = end;
            if !self.start_checked
                && let (Some(p), Some(first)) = (position, batch.get(start))
            {
                self.start_checked = true;
                if first.offset() > p {
                    self.check_start(p).await;
                }
            }
            // Chunks go to the store thread as soon as they are decoded, each starting
            // where the one before ends, so the store applies one while the next is being
            // decoded (it merges waiting chunks into one transaction of up to `max_batch`).
            // A chunk whose predecessor did not commit cannot commit either: its
            // compare-and-set starts where the predecessor would have ended.
            let chunk = (self.shared.max_batch / CHUNKS).max(1);
            let mut in_flight: VecDeque<(oneshot::Receiver<Applied<F>>, usize, usize, i64)> = VecDeque::new();
            let mut from = position;
            let mut poison = None;
            let mut stop_here = false;
            let mut pending_end = start;
            while pending_end < batch.len() && !stop_here && poison.is_none() {
                let chunk_start = pending_end;
                let mut items = Vec::new();
                while pending_end < batch.len() && items.len() < chunk {
                    let record = &batch[pending_end];
                    if self.past_stop(record) {
                        stop_here = true;
                        break;
                    }
                    match herald_bus::consumer::decode_record::<F>(&*self.shared.codec, record).await {
                        Ok(envelope) => items.push((Arc::new(Item { offset: record.offset(), decoded: Ok(envelope) }), Action::Apply)),
                        Err(failure) => {
                            poison = Some((pending_end, failure));
                            break;
                        }
                    }
                    pending_end += 1;
                }
                if let Some((last, _)) = items.last() {
                    let to = last.offset + 1;
                    match self.send(items, from, to) {
                        Some(rx) => in_flight.push_back((rx, chunk_start, pending_end, to)),
                        None => return self.shared.store_gone(),
                    }
                    from = Some(to);
                }
            }
            // The outcomes, in order. After the first that did not commit, the rest are
            // awaited (so nothing is left running) and only looked at if they committed.
            let mut first_failure: Option<(Outcome, usize)> = None;
            while let Some((rx, chunk_start, chunk_end, to)) = in_flight.pop_front() {
                let Ok((outcome, _batch)) = rx.await else { return self.shared.store_gone() };
                match outcome {
                    Outcome::Committed { positions } => {
                        let applied: usize = positions.iter().map(|(_, _, n)| *n).sum();
                        Board::count(&self.shared.board.applied_total, applied as u64);
                        Board::count(&self.shared.board.batches_total, 1);
                        metrics::counter!("herald_projector_events_total", "projection" => self.shared.key.projection.clone()).increment(applied as u64);
                        metrics::counter!("herald_projector_batches_total", "projection" => self.shared.key.projection.clone()).increment(1);
                        batch[chunk_start..chunk_end].iter().for_each(|r| progress.done(r.offset()));
                        self.position = Some(Some(to));
                        self.shared.board.with(self.partition, |p| {
                            p.position = Some(to);
                            p.block = None;
                        });
                    }
                    other if first_failure.is_none() => first_failure = Some((other, chunk_start)),
                    _ => {}
                }
            }
            if let Some((outcome, chunk_start)) = first_failure {
                if self.position.flatten().is_some_and(|p| batch.get(chunk_start).is_some_and(|r| r.offset() < p)) {
                    // A later chunk committed after all (another member had moved the
                    // position exactly there): go on from where the store stands.
                    start = chunk_start;
                    continue;
                }
                match outcome {
                    Outcome::Committed { .. } => {}
                    Outcome::EventFailed { partition, offset, error } => {
                        let index = batch.iter().position(|r| r.offset() == offset).unwrap_or(chunk_start);
                        let attempts = if index == 0 { attempt } else { 1 };
                        let class = if error.is_store_conflict() {
                            FailureClass::Wait
                        } else if error.is_permanent() {
                            FailureClass::Permanent
                        } else {
                            FailureClass::Retry
                        };
                        tracing::warn!(partition, offset, %error, "projection failed on a record");
                        return self.failed(index, Stage::Handler, error.to_string(), attempts, class);
                    }
                    Outcome::Fenced { partition, stored } => {
                        tracing::warn!(partition, ?stored, "fenced: another member moved the position");
                        let moved_on = stored.is_some_and(|s| self.position.flatten().is_none_or(|p| s >= p));
                        self.position = Some(stored);
                        self.shared.board.with(self.partition, |p| p.position = stored);
                        if moved_on {
                            start = chunk_start;
                            continue; // Skip what the other member applied, go on from there.
                        }
                        // Moved back (an operator reset it): this member cannot seek back
                        // safely from here; retried, it is logged until the partition moves.
                        return self.failed(chunk_start, Stage::Handler, format!("position moved back to {stored:?} by another writer"), 0, FailureClass::Wait);
                    }
                    Outcome::Revoked => return Delivery::Interrupted,
                    Outcome::Superseded { live } => {
                        tracing::info!(live, version = self.shared.key.version, "another view version is live now: stopping");
                        self.shared.board.stop(Stopped::Superseded { live });
                        self.shared.stop.notify_one();
                        return Delivery::Interrupted;
                    }
                    Outcome::StoreFailed(e) => {
                        tracing::warn!(partition = self.partition, error = %e, "store failed; retrying the batch");
                        return self.failed(chunk_start, Stage::Handler, format!("store: {e}"), 0, FailureClass::Wait);
                    }
                }
            }
            if let Some((index, failure)) = poison {
                let class = if failure.stage == Stage::Unavailable { FailureClass::Wait } else { FailureClass::Permanent };
                return self.failed(index, failure.stage, failure.reason, 0, class);
            }
            if stop_here {
                self.shared.board.with(self.partition, |p| p.passed_stop = true);
                return Delivery::Done;
            }
            start = pending_end;
        }
        Delivery::Done
    }

    async fn dead_lettered(&mut self, record: &OwnedRecord, failure: &Failure) -> Result<(), Failure> {
        #[cfg(feature = "crash-points")]
        if let Some(crash) = &self.shared.crash {
            crash.reached(crate::crash::Stage::AfterDeadLetter);
        }
        let item = Arc::new(Item { offset: record.offset(), decoded: Err(failure.clone()) });
        let to = record.offset() + 1;
        let Some(outcome) = self.transact(vec![(item, Action::Skip(failure.clone()))], to).await else {
            self.shared.store_gone();
            return Err(Failure { reason: "recording the dead letter: the store thread is gone".to_owned(), ..failure.clone() });
        };
        match outcome {
            Outcome::Committed { .. } => {
                Board::count(&self.shared.board.dead_lettered_total, 1);
                let key = &self.shared.key;
                metrics::counter!("herald_projector_dead_lettered_total", "projection" => key.projection.clone(), "topic" => key.topic.clone(), "stage" => failure.stage.as_str()).increment(1);
                self.position = Some(Some(to));
                self.shared.board.with(self.partition, |p| {
                    p.position = Some(to);
                    p.block = None;
                });
                Ok(())
            }
            // Another member moved the position: past the record, it is done (nothing to
            // record); exactly to it, the next attempt records it from there. Anywhere
            // else (moved back by an operator) this member cannot go on safely: retried,
            // logged, until the partition moves.
            Outcome::Fenced { stored: Some(stored), .. } if stored >= record.offset() => {
                self.position = Some(Some(stored));
                self.shared.board.with(self.partition, |p| p.position = Some(stored));
                if stored > record.offset() {
                    Ok(())
                } else {
                    Err(Failure { reason: "recording the dead letter: the position moved; recording it again from there".to_owned(), ..failure.clone() })
                }
            }
            other => Err(Failure { reason: format!("recording the dead letter: {other:?}"), ..failure.clone() }),
        }
    }
}
