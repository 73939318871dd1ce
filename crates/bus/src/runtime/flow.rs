//! Flow control: how many bytes of records may wait for the workers, and when a partition
//! is paused and resumed.
//!
//! Pausing makes librdkafka drop what it prefetched for the partition (and fetch it again
//! after the resume), so it must be rare and must not flap: a partition is paused when its
//! queue passes its share (a quarter of the budget) or all queues together pass the whole
//! budget, and resumed only once its queue is down to half its share *and* the total to
//! three quarters of the budget. The loop keeps polling while partitions are paused, and
//! after a resume it wakes the broker thread that fetches the partition (librdkafka does
//! not, so a partition resumed while its broker thread slept waited up to a second).

/// The byte budget of the records queued ahead of the workers.
///
/// ```
/// use herald_bus::runtime::flow::Budget;
/// let budget = Budget::new(64 << 20);
/// assert!(budget.should_pause(17 << 20, 20 << 20), "over its quarter");
/// assert!(!budget.may_resume(12 << 20, 20 << 20), "not yet down to half of its share");
/// assert!(budget.may_resume(8 << 20, 20 << 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    max: usize,
}

impl Budget {
    /// Smallest budget accepted (smaller ones are raised to it).
    pub const MIN: usize = 4096;

    /// A budget of `max` bytes across all partitions.
    pub fn new(max: usize) -> Self {
        Budget { max: max.max(Self::MIN) }
    }

    /// The whole budget.
    pub fn max(&self) -> usize {
        self.max
    }

    /// What one partition may hold before it is paused.
    pub fn share(&self) -> usize {
        self.max / 4
    }

    /// True when a partition holding `own` bytes, with `total` queued overall, must be
    /// paused.
    pub fn should_pause(&self, own: usize, total: usize) -> bool {
        own > self.share() || total > self.max
    }

    /// True when a paused partition holding `own` bytes, with `total` queued overall, may
    /// be resumed.
    pub fn may_resume(&self, own: usize, total: usize) -> bool {
        own <= self.share() / 2 && total <= self.share() * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a partition fed faster than it drains: it must pause at the high mark and
    /// not resume before the low mark, so a steady state does not flap.
    #[test]
    fn pauses_at_the_high_mark_and_resumes_only_at_the_low_mark() {
        let budget = Budget::new(8000);
        let (mut own, mut paused, mut flips) = (0usize, false, 0);
        for step in 0..1000 {
            if !paused {
                own += 100; // a record arrives
            }
            if step % 2 == 0 {
                own = own.saturating_sub(60); // the worker finishes some
            }
            if !paused && budget.should_pause(own, own) {
                paused = true;
                flips += 1;
                assert!(own > 2000);
            } else if paused && budget.may_resume(own, own) {
                paused = false;
                assert!(own <= 1000);
            }
        }
        assert!(flips > 0 && flips < 100, "hysteresis keeps pauses rare: {flips}");
    }

    #[test]
    fn the_total_alone_can_pause_and_hold_back_a_resume() {
        let budget = Budget::new(8000);
        assert!(budget.should_pause(10, 8001));
        assert!(!budget.may_resume(10, 6001));
        assert!(budget.may_resume(10, 6000));
        assert_eq!(Budget::new(1).max(), Budget::MIN);
    }
}
