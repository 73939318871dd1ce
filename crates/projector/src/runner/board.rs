//! The board: what the projector knows of each partition it owns, written by the
//! partition sinks and the rebalance hooks, read for `/status`, the stop point and the
//! metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::policy::Stopped;
use crate::status::PartitionStatus;

/// Why a partition is not moving freely.
#[derive(Debug, Clone)]
pub(crate) enum Block {
    /// The last attempt failed; the runtime retries it.
    Retrying(String),
    /// Its poison record is being written to the dead-letter topic.
    DeadLettering,
    /// Circuit open until an operator acts.
    Open(String),
    /// Its poison record's dead letter cannot be written: parked until an operator acts.
    Parked(String),
}

/// One owned partition.
#[derive(Debug, Default, Clone)]
pub(crate) struct Part {
    /// Stored next offset (`None`: nothing applied yet).
    pub position: Option<i64>,
    pub block: Option<Block>,
    pub last_error: Option<String>,
    /// Where this partition stops (stop-at modes).
    pub stop: Option<Stop>,
    /// A record at or past the stop point arrived, after every record before it was applied.
    pub passed_stop: bool,
    /// The client reported the end of the partition; the offset after the last record
    /// fetched by then (`None`: none was).
    pub eof: Option<Option<i64>>,
    /// End of the readable log, from the broker.
    pub end: Option<i64>,
    /// Start of the log (its low watermark), from the broker: where a partition with no
    /// stored position starts, so its lag counts from there.
    pub start: Option<i64>,
}

impl Part {
    /// True when every record before the stop point was applied.
    fn done(&self) -> bool {
        let Some(stop) = self.stop else { return false };
        let position = self.position.unwrap_or(0);
        // A stop within the log is reached at its end too: its last offsets may be
        // transaction markers, never delivered.
        let at_end = !stop.past_end && self.eof.is_some_and(|fetched| fetched.is_none_or(|f| self.position.is_some_and(|p| p >= f)));
        position >= stop.offset || self.passed_stop || at_end
    }
}

/// Where a partition stops (stop-at modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stop {
    /// Exclusive offset.
    pub offset: i64,
    /// It lay past the end of the log when the projector was built: the end of the
    /// partition does not reach it, only records do.
    pub past_end: bool,
}

impl Stop {
    /// A stop at `offset` of a partition whose log ended at `end` when the projector was built.
    pub(crate) fn new(offset: i64, end: i64) -> Stop {
        Stop { offset, past_end: offset > end }
    }
}

/// The board (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Board {
    parts: Mutex<BTreeMap<i32, Part>>,
    pub applied_total: AtomicU64,
    pub dead_lettered_total: AtomicU64,
    pub batches_total: AtomicU64,
    last_error: herald_bus::last_error::LastError,
    /// Stop points of the stop-at modes.
    stops: Mutex<Option<BTreeMap<i32, Stop>>>,
    /// Why the projector stops by itself, once it must.
    stopped: Mutex<Option<Stopped>>,
    /// Partitions finished at the stop point, once it is reached.
    finished: AtomicUsize,
    /// Why the projector must stop with an error (the store thread is gone).
    fatal: Mutex<Option<String>>,
}

impl Board {
    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<i32, Part>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to `partition`'s state, if owned.
    pub(crate) fn with(&self, partition: i32, f: impl FnOnce(&mut Part)) {
        if let Some(part) = self.lock().get_mut(&partition) {
            f(part);
        }
    }

    pub(crate) fn assign(&self, partition: i32, position: Option<i64>) {
        let stop = self.stops().and_then(|s| s.get(&partition).copied());
        self.lock().insert(partition, Part { position, stop, ..Part::default() });
    }

    pub(crate) fn revoke(&self, partition: i32) {
        self.lock().remove(&partition);
    }

    pub(crate) fn error(&self, partition: i32, error: String) {
        self.last_error.set(format!("partition {partition}: {error}"));
        self.with(partition, |p| p.last_error = Some(error));
    }

    /// The last error of a partition's batch, and how long ago it happened.
    pub(crate) fn last_error(&self) -> Option<(String, std::time::Duration)> {
        self.last_error.get()
    }

    pub(crate) fn set_stops(&self, stops: Option<BTreeMap<i32, Stop>>) {
        *self.stops.lock().unwrap_or_else(|p| p.into_inner()) = stops;
    }

    fn stops(&self) -> Option<BTreeMap<i32, Stop>> {
        self.stops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True once every partition with a stop point is owned here and done (rebuilds run
    /// alone); then records how many were ([`Board::finished`]). Never without a stop
    /// point: a projector that owned and finished nothing has not reached anything.
    pub(crate) fn reached_stop(&self) -> bool {
        let Some(stops) = self.stops() else { return false };
        let parts = self.lock();
        let reached = !stops.is_empty() && stops.keys().all(|p| parts.get(p).is_some_and(Part::done));
        if reached {
            self.finished.store(stops.len(), Ordering::Relaxed);
        }
        reached
    }

    /// The partitions owned here and finished when the stop point was reached (0 before).
    pub(crate) fn finished(&self) -> usize {
        self.finished.load(Ordering::Relaxed)
    }

    /// Records why the projector must stop (the first reason wins).
    pub(crate) fn stop(&self, why: Stopped) {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
    }

    pub(crate) fn stopped(&self) -> Option<Stopped> {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why the projector must stop with an error (the first reason wins).
    pub(crate) fn fail(&self, why: String) {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
    }

    /// Why the projector must stop with an error, if it must.
    pub(crate) fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Folds end offsets read from the broker into the partitions.
    pub(crate) fn ends(&self, ends: &BTreeMap<i32, (i64, i64)>) {
        let mut parts = self.lock();
        for (p, (start, end)) in ends {
            if let Some(part) = parts.get_mut(p) {
                part.end = Some(part.end.map_or(*end, |e| e.max(*end)));
                part.start = Some(*start);
            }
        }
    }

    /// The partitions as `/status` shows them.
    pub(crate) fn partitions(&self) -> Vec<PartitionStatus> {
        self.lock()
            .iter()
            .map(|(&partition, part)| {
                let (state, blocked_by) = match &part.block {
                    None => ("running", None),
                    Some(Block::Retrying(e)) => ("retrying", Some(e.clone())),
                    Some(Block::DeadLettering) => ("dead-lettering", None),
                    Some(Block::Open(e)) => ("circuit-open", Some(e.clone())),
                    Some(Block::Parked(e)) => ("parked", Some(e.clone())),
                };
                let end = part.end.max(part.eof.flatten().filter(|_| part.end.is_some()));
                PartitionStatus {
                    partition,
                    position: part.position,
                    end_offset: end,
                    // From the log's start when nothing was applied, as `status::read` counts.
                    lag: end.map(|e| (e - part.position.or(part.start).unwrap_or(0)).max(0)),
                    state: state.to_owned(),
                    buffered: 0,
                    paused: matches!(part.block, Some(Block::Open(_) | Block::Parked(_))),
                    last_error: blocked_by.or_else(|| part.last_error.clone()),
                }
            })
            .collect()
    }

    pub(crate) fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_done_at_its_stop_past_it_or_at_its_end() {
        let board = Board::default();
        board.set_stops(Some(BTreeMap::from([(0, Stop::new(10, 12)), (1, Stop::new(5, 5))])));
        board.assign(0, Some(3));
        assert!(!board.reached_stop(), "partition 1 is not owned");
        board.assign(1, None);
        board.with(0, |p| p.position = Some(10));
        assert!(!board.reached_stop());
        // Partition 1's last records are transaction markers: it ends at 4, fetched all.
        board.with(1, |p| p.eof = Some(Some(4)));
        assert!(!board.reached_stop(), "fetched up to 4, nothing applied yet");
        board.with(1, |p| p.position = Some(4));
        assert_eq!(board.finished(), 0);
        assert!(board.reached_stop());
        assert_eq!(board.finished(), 2);
        board.stop(Stopped::StopPoint);
        board.stop(Stopped::Shutdown);
        assert_eq!(board.stopped(), Some(Stopped::StopPoint), "the first reason wins");
    }

    #[test]
    fn a_stop_past_the_end_of_the_log_is_not_reached_at_the_end() {
        let board = Board::default();
        // Partition 0 ended at 3 when the projector was built; 1 was empty.
        board.set_stops(Some(BTreeMap::from([(0, Stop::new(1_000, 3)), (1, Stop::new(7, 0))])));
        board.assign(0, None);
        board.assign(1, None);
        board.with(0, |p| {
            p.position = Some(3);
            p.eof = Some(Some(3));
        });
        board.with(1, |p| p.eof = Some(None));
        assert!(!board.reached_stop(), "the end of the log is short of both stops");
        board.with(1, |p| p.position = Some(7));
        board.with(0, |p| p.passed_stop = true);
        assert!(board.reached_stop());
        assert_eq!(board.finished(), 2);
    }

    #[test]
    fn without_stop_points_nothing_is_reached() {
        let board = Board::default();
        board.set_stops(Some(BTreeMap::new()));
        assert!(!board.reached_stop(), "no partition owned and finished");
        board.assign(0, Some(3));
        assert!(!board.reached_stop());
        assert_eq!(board.finished(), 0);
    }
}
