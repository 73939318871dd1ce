//! The store thread: applies batches in transactions, one at a time, off the poll loop.
//!
//! For each batch: begin; for each partition, compare-and-set its position from where the
//! batch starts to where it ends; apply its events (each run of decoded events at once,
//! through `Projection::apply_batch`) or record them as dead-lettered; check
//! that this member still owns every partition of the batch; commit. Any failure rolls
//! the whole transaction back, so the view and the positions move together or not at all.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use herald_bus::trace::{SpanKind, SpanRecord};
use herald_bus::EventFamily;
use tokio::sync::oneshot;

use crate::batch::{Action, Batch, Outcome};
#[cfg(feature = "crash-points")]
use crate::crash::{CrashPoint, Stage};
use crate::error::ProjectionError;
use crate::position::{self, Key};
use crate::projection::Projection;
use crate::store::{Connection, Store, StoreError};

/// A job for the store thread. The queue is bounded by its senders: each partition
/// worker sends the chunks of one delivered batch (at most the runtime's batch of
/// records) and waits for their answers before taking another, and the projector keeps
/// at most one live-version question waiting.
pub(crate) enum Job<F> {
    /// Apply a batch. The batch comes back with the outcome, so that its events are
    /// freed by the task that decoded them, not by the store thread: the store thread
    /// bounds a projector's rate, and freeing memory another thread allocated is among
    /// the dearest things an allocator does (an eighth of the store thread's time in the
    /// SQLite bench under glibc's malloc).
    Apply(Batch<F>, oneshot::Sender<Applied<F>>),
    /// Read the stored position of a partition (`None`: none stored).
    Position(i32, oneshot::Sender<Result<Option<i64>, StoreError>>),
    /// Read the live version of the view (so an idle projector notices a swap).
    LiveVersion(oneshot::Sender<Result<Option<u32>, StoreError>>),
}

/// What the store thread answers to [`Job::Apply`]: the outcome, and the batch back.
pub(crate) type Applied<F> = (Outcome, Batch<F>);

/// Partition → generation of this member's current ownership.
pub(crate) type Ownership = Arc<Mutex<HashMap<i32, u64>>>;

pub(crate) struct Worker<F, P> {
    pub store: Arc<dyn Store>,
    pub projection: Arc<P>,
    pub key: Key,
    pub ownership: Ownership,
    #[cfg(feature = "crash-points")]
    pub crash: Option<Arc<CrashPoint>>,
    /// Stop writing when another version becomes live (false for rebuilds).
    pub follow_live: bool,
    /// Most events in one transaction when batches of several partitions are merged.
    pub max_batch: usize,
    pub _family: std::marker::PhantomData<fn() -> F>,
}

/// Reports a span for each applied event of a committed `batch` that came with a trace
/// context: `project TOPIC`, a child of the span that wrote the event, from the start of
/// the transaction to its commit, so the view's update is part of the event's trace.
fn report_spans<F: EventFamily, P: Projection<F>>(batch: &Batch<F>, began: std::time::SystemTime) {
    for (item, _) in batch.slices.iter().flat_map(|s| s.items.iter()).filter(|(_, action)| matches!(action, Action::Apply)) {
        let Ok(envelope) = &item.decoded else { continue };
        let Some(cause) = envelope.meta.trace else { continue };
        let (topic, id) = (envelope.position.topic.as_str(), envelope.meta.ce_id());
        let name = format!("project {topic}");
        SpanRecord::new(&name, SpanKind::Consumer, cause.child(), Some(cause.span_id), began).topic(topic).event(&envelope.meta.event_type, &id).actor(P::NAME).record();
    }
}

/// Runs projection code, catching a panic: `Err` with the panic's message, so the event
/// fails permanently (and its transaction is rolled back) like any other permanent
/// failure instead of taking the store thread, and every partition with it, down.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| format!("the projection panicked: {}", herald_bus::panics::describe(&*payload)))
}

impl<F: EventFamily, P: Projection<F>> Worker<F, P> {
    /// Runs until the job channel closes.
    pub(crate) fn run(self, jobs: std_mpsc::Receiver<Job<F>>) {
        let mut conn: Option<Box<dyn Connection>> = None;
        let batch_seconds = metrics::histogram!("herald_projector_batch_seconds", "projection" => P::NAME);
        // Jobs taken from the channel while merging, to run next.
        let mut waiting: VecDeque<Job<F>> = VecDeque::new();
        while let Some(job) = waiting.pop_front().or_else(|| jobs.recv().ok()) {
            if conn.is_none() {
                match self.store.connect() {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "store connection failed");
                        match job {
                            Job::Apply(batch, reply) => drop(reply.send((Outcome::StoreFailed(e), batch))),
                            Job::Position(_, reply) => drop(reply.send(Err(e))),
                            Job::LiveVersion(reply) => drop(reply.send(Err(e))),
                        }
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let failed = match job {
                Job::Apply(batch, reply) => {
                    // The batches other partitions have waiting join this one's transaction,
                    // up to `max_batch` events: fewer, larger transactions.
                    let mut group = vec![(batch, reply)];
                    let mut events = group[0].0.events();
                    while group[0].0.mergeable() && events < self.max_batch {
                        match jobs.try_recv() {
                            Ok(Job::Apply(next, reply)) if next.mergeable() && events + next.events() <= self.max_batch => {
                                events += next.events();
                                group.push((next, reply));
                            }
                            Ok(other) => {
                                waiting.push_back(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let started = std::time::Instant::now();
                    let began = std::time::SystemTime::now();
                    let outcomes = self.apply_group(c.as_mut(), &mut group);
                    batch_seconds.record(started.elapsed().as_secs_f64());
                    let mut failed = false;
                    for ((batch, reply), outcome) in group.into_iter().zip(outcomes) {
                        if matches!(outcome, Outcome::Committed { .. }) && herald_bus::trace::spans_wanted() {
                            report_spans::<F, P>(&batch, began);
                        }
                        // A transient store error in the projection's statements may
                        // have broken the connection (closed, the server shut down) too.
                        failed |= matches!(&outcome, Outcome::StoreFailed(_))
                            || matches!(&outcome, Outcome::EventFailed { error, .. } if error.is_store_conflict());
                        // If the partition is gone, the batch is dropped here after all.
                        let _ = reply.send((outcome, batch));
                    }
                    failed
                }
                Job::Position(partition, reply) => {
                    let read = self.read_position(c.as_mut(), partition);
                    let failed = read.is_err();
                    let _ = reply.send(read);
                    failed
                }
                Job::LiveVersion(reply) => {
                    let read = (|| {
                        let mut tx = c.read()?;
                        let live = position::live_version(tx.as_tx(), &self.key.projection)?;
                        tx.rollback()?;
                        Ok(live.map(|(v, _)| v))
                    })();
                    let failed = read.is_err();
                    let _ = reply.send(read);
                    failed
                }
            };
            if failed {
                // Start over with a fresh connection: the old one may be broken.
                conn = None;
            }
        }
    }

    /// Applies the batches of `group` in one transaction, or, when that does not commit,
    /// each in its own (so each gets its own outcome: one partition's failing event or
    /// fencing never holds back the others). One outcome per batch.
    fn apply_group(&self, conn: &mut dyn Connection, group: &mut [(Batch<F>, oneshot::Sender<Applied<F>>)]) -> Vec<Outcome> {
        if let [(batch, _)] = group {
            let outcome = self.apply(conn, batch);
            self.committed(&outcome);
            return vec![outcome];
        }
        let counts: Vec<usize> = group.iter().map(|(b, _)| b.slices.len()).collect();
        let merged = Batch { slices: group.iter_mut().flat_map(|(b, _)| b.slices.drain(..)).collect() };
        let outcome = self.apply(conn, &merged);
        // Hand each batch its slices back.
        let mut slices = merged.slices.into_iter();
        for ((batch, _), n) in group.iter_mut().zip(&counts) {
            batch.slices.extend(slices.by_ref().take(*n));
        }
        match outcome {
            Outcome::Committed { positions } => {
                self.committed(&Outcome::Committed { positions: Vec::new() });
                let mut positions = positions.into_iter();
                counts.iter().map(|n| Outcome::Committed { positions: positions.by_ref().take(*n).collect() }).collect()
            }
            _ => group
                .iter()
                .map(|(batch, _)| {
                    let outcome = self.apply(conn, batch);
                    self.committed(&outcome);
                    outcome
                })
                .collect(),
        }
    }

    /// The crash point after a commit.
    fn committed(&self, outcome: &Outcome) {
        #[cfg(feature = "crash-points")]
        if let Outcome::Committed { .. } = outcome
            && let Some(crash) = &self.crash
        {
            crash.reached(Stage::AfterCommit);
        }
        #[cfg(not(feature = "crash-points"))]
        let _ = outcome;
    }

    fn read_position(&self, conn: &mut dyn Connection, partition: i32) -> Result<Option<i64>, StoreError> {
        let mut tx = conn.read()?;
        let positions = position::load(tx.as_tx(), &self.key)?;
        tx.rollback()?;
        Ok(positions.get(&partition).copied())
    }

    /// Applies `batch` in one transaction, each run of events through the projection's
    /// [`Projection::apply_batch`]; when that fails without naming the event, again event
    /// by event, so the failure is the one [`Projection::apply`] reports for its event.
    fn apply(&self, conn: &mut dyn Connection, batch: &Batch<F>) -> Outcome {
        match self.transact(conn, batch, true) {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::debug!(%error, "the batched apply failed; applying the batch event by event");
                self.transact(conn, batch, false).unwrap_or_else(|error| Outcome::StoreFailed(StoreError::Statement { message: error.to_string(), transient: true }))
            }
        }
    }

    /// One transaction of `batch`. `Err`: `apply_batch` failed without naming the event
    /// (rolled back), only when `batched`.
    fn transact(&self, conn: &mut dyn Connection, batch: &Batch<F>, batched: bool) -> Result<Outcome, ProjectionError> {
        let mut tx = match conn.begin(self.key.version) {
            Ok(tx) => tx,
            Err(e) => return Ok(Outcome::StoreFailed(e)),
        };
        if self.follow_live {
            match position::live_version(tx.as_tx(), &self.key.projection) {
                Ok(Some((live, _))) if live != self.key.version => {
                    let _ = tx.rollback();
                    return Ok(Outcome::Superseded { live });
                }
                Ok(_) => {}
                Err(e) => return Ok(Outcome::StoreFailed(e)),
            }
        }
        let mut positions = Vec::with_capacity(batch.slices.len());
        // The events of every slice that holds only decoded events, for one `apply_batch`
        // (each partition's in offset order), and where each came from.
        let mut events = Vec::new();
        let mut origins = Vec::new();
        for slice in &batch.slices {
            match position::advance(tx.as_tx(), &self.key, slice.partition, slice.from, slice.to) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = tx.rollback();
                    return Ok(match self.read_position(conn, slice.partition) {
                        Ok(stored) => Outcome::Fenced { partition: slice.partition, stored },
                        Err(e) => Outcome::StoreFailed(e),
                    });
                }
                Err(e) => return Ok(Outcome::StoreFailed(e)),
            }
            #[cfg(feature = "crash-points")]
            if let Some(crash) = &self.crash {
                crash.reached(Stage::BeforeApply);
            }
            if batched && slice.mergeable() {
                for (item, _) in &slice.items {
                    if let Ok(envelope) = &item.decoded {
                        events.push(envelope);
                        origins.push((slice.partition, item.offset));
                    }
                }
                positions.push((slice.partition, slice.to, slice.items.len()));
                continue;
            }
            let mut applied = 0;
            for (item, action) in &slice.items {
                let result = match (action, &item.decoded) {
                    (Action::Apply, Ok(envelope)) => {
                        applied += 1;
                        guarded(|| self.projection.apply(tx.as_tx(), envelope)).unwrap_or_else(|panic| Err(ProjectionError::Permanent(panic)))
                    }
                    (Action::Skip(failure), _) => position::record_dead_letter(
                        tx.as_tx(),
                        &self.key,
                        slice.partition,
                        item.offset,
                        failure.stage.as_str(),
                        &failure.reason,
                    )
                    .map_err(ProjectionError::from),
                    (Action::Apply, Err(failure)) => Err(ProjectionError::Permanent(failure.reason.clone())),
                };
                if let Err(error) = result {
                    let _ = tx.rollback();
                    if let (Action::Skip(_), ProjectionError::Store(e)) = (action, &error) {
                        return Ok(Outcome::StoreFailed(StoreError::Statement { message: e.to_string(), transient: true }));
                    }
                    return Ok(Outcome::EventFailed { partition: slice.partition, offset: item.offset, error });
                }
            }
            positions.push((slice.partition, slice.to, applied));
        }
        // A panic in `apply_batch` does not say which event: applied again one by one,
        // the event whose `apply` panics is the one that fails.
        if !events.is_empty()
            && let Err(failed) = guarded(|| self.projection.apply_batch(tx.as_tx(), &events)).unwrap_or_else(|panic| Err(ProjectionError::Permanent(panic).into()))
        {
            let _ = tx.rollback();
            return match failed.index.and_then(|i| origins.get(i)) {
                Some(&(partition, offset)) => Ok(Outcome::EventFailed { partition, offset, error: failed.error }),
                None => Err(failed.error),
            };
        }
        #[cfg(feature = "crash-points")]
        if let Some(crash) = &self.crash {
            crash.reached(Stage::AfterApply);
        }
        // Commit only while this member still owns every partition of the batch; holding
        // the lock through the commit keeps a revocation from slipping in between.
        let owned = self.ownership.lock().unwrap_or_else(|p| p.into_inner());
        if batch.slices.iter().any(|s| owned.get(&s.partition) != Some(&s.generation)) {
            drop(owned);
            let _ = tx.rollback();
            return Ok(Outcome::Revoked);
        }
        let committed = tx.commit();
        drop(owned);
        Ok(match committed {
            Ok(()) => Outcome::Committed { positions },
            // A failed commit may or may not have landed; the next attempt's
            // compare-and-set finds out (it is fenced if it did).
            Err(e) => Outcome::StoreFailed(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        assert_eq!(guarded(|| 7), Ok(7));
        let literal = guarded(|| -> u8 { panic!("literal") });
        assert_eq!(literal, Err("the projection panicked: literal".to_owned()));
        let formatted = guarded(|| -> u8 { panic!("formatted {}", 7) });
        assert_eq!(formatted, Err("the projection panicked: formatted 7".to_owned()));
        let opaque = guarded(|| -> u8 { std::panic::panic_any(7_u32) });
        assert_eq!(opaque, Err("the projection panicked: (a panic without a message)".to_owned()));
    }
}
