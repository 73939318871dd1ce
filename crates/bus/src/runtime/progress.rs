//! Progress: the contiguous finished offset of a partition.
//!
//! The worker announces the records it hands to its sink ([`Progress::expect`], in offset
//! order, gaps included: compaction and transaction markers leave holes in the offsets);
//! the sink reports each record it finished ([`Progress::done`]). The runtime stores (or
//! the sink commits) the offset after the last record of the contiguous finished run,
//! never past a record still in work: storing out of order commits past unfinished work
//! (rust-rdkafka#89).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// The finished records of one partition (see the module docs).
///
/// ```
/// use herald_bus::runtime::Progress;
/// let progress = Progress::default();
/// progress.expect([10, 11, 14]); // 12 and 13 are not in the log
/// progress.done(10);
/// progress.done(14); // 11 is still in work
/// assert_eq!(progress.completed(), Some(10));
/// progress.done(11);
/// assert_eq!(progress.completed(), Some(14));
/// ```
#[derive(Debug)]
pub struct Progress {
    /// Last offset of the contiguous finished run (-1: none yet).
    completed: AtomicI64,
    /// Records announced and not yet part of the run, in offset order, with whether each
    /// is finished.
    pending: Mutex<VecDeque<(i64, bool)>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { completed: AtomicI64::new(-1), pending: Mutex::default() }
    }
}

impl Progress {
    /// Announces records handed to the sink, in offset order.
    pub fn expect(&self, offsets: impl IntoIterator<Item = i64>) {
        let mut pending = self.lock();
        let last = pending.back().map_or(self.completed.load(Ordering::Acquire), |(o, _)| *o);
        pending.extend(offsets.into_iter().filter(|o| *o > last).map(|o| (o, false)));
    }

    /// Marks `offset` finished. Offsets never announced, or already part of the run, are
    /// ignored.
    pub fn done(&self, offset: i64) {
        let mut pending = self.lock();
        match pending.front_mut() {
            Some((first, finished)) if *first == offset => *finished = true,
            _ => match pending.binary_search_by_key(&offset, |(o, _)| *o) {
                Ok(i) => pending[i].1 = true,
                Err(_) => return,
            },
        }
        let mut last = None;
        while let Some(&(o, true)) = pending.front() {
            last = Some(o);
            pending.pop_front();
        }
        if let Some(o) = last {
            self.completed.store(o, Ordering::Release);
        }
    }

    /// Last offset of the contiguous finished run (`None`: nothing finished yet).
    pub fn completed(&self) -> Option<i64> {
        let c = self.completed.load(Ordering::Acquire);
        (c >= 0).then_some(c)
    }

    /// Announced records not finished yet.
    pub fn in_work(&self) -> usize {
        self.lock().iter().filter(|(_, f)| !f).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(i64, bool)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_moves_one_by_one() {
        let p = Progress::default();
        p.expect(0..5);
        assert_eq!(p.completed(), None);
        for o in 0..5 {
            p.done(o);
            assert_eq!(p.completed(), Some(o));
        }
        p.done(3); // a repeat changes nothing
        p.done(99); // never announced
        assert_eq!(p.completed(), Some(4));
        assert_eq!(p.in_work(), 0);
    }

    #[test]
    fn out_of_order_completion_never_passes_a_gap() {
        let p = Progress::default();
        p.expect(100..104);
        p.done(102);
        p.done(103);
        assert_eq!(p.completed(), None, "100 and 101 are still in work");
        p.done(100);
        assert_eq!(p.completed(), Some(100));
        assert_eq!(p.in_work(), 1);
        p.done(101);
        assert_eq!(p.completed(), Some(103), "the gap closed: the run takes in what waited");
    }

    #[test]
    fn offsets_missing_from_the_log_do_not_hold_the_run_back() {
        // Compacted or transaction-marker offsets never arrive: 5 follows 2.
        let p = Progress::default();
        p.expect([0, 1, 2, 5, 9]);
        for o in [0, 1, 2, 5] {
            p.done(o);
        }
        assert_eq!(p.completed(), Some(5));
        p.expect([3, 9, 10]); // repeats and older offsets are ignored
        p.done(9);
        p.done(10);
        assert_eq!(p.completed(), Some(10));
    }
}
