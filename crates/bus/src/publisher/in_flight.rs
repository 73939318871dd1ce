//! The bound on unacknowledged sends, with wake-ups in batches.
//!
//! A semaphore would wake the waiting publisher once per acknowledgement: with the bound
//! reached, every delivery report (on librdkafka's thread) would cost a cross-thread
//! wake-up and a context switch. Here a full publisher sleeps until the count falls to
//! three quarters of the bound, then queues a quarter of it in one go.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts unacknowledged sends against a bound.
#[derive(Debug)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    max: usize,
    /// Wake-up point: a full publisher waits until the count falls to this.
    low: usize,
    space: Notify,
}

/// One unacknowledged send; dropping it (when the delivery report arrives, or when the
/// send failed) frees its place.
#[derive(Debug)]
pub(crate) struct Slot(Arc<InFlight>);

impl InFlight {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(InFlight { count: AtomicUsize::new(0), max, low: max - max.div_ceil(4), space: Notify::new() })
    }

    /// Takes a place, waiting while the bound is reached. Cancellation-safe.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let n = self.count.load(Ordering::Acquire);
            if n < self.max {
                if self.count.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return Slot(self.clone());
                }
                continue;
            }
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so a release in between is not missed.
            if self.count.load(Ordering::Acquire) >= self.max {
                notified.await;
            }
        }
    }

    /// Unacknowledged sends now.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let before = self.0.count.fetch_sub(1, Ordering::AcqRel);
        if before > self.0.low && before - 1 <= self.0.low {
            self.0.space.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_bound_wakes_its_waiter_at_three_quarters() {
        let in_flight = InFlight::new(8);
        let mut held: Vec<Slot> = Vec::new();
        for _ in 0..8 {
            held.push(in_flight.acquire().await);
        }
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.acquire().await })
        };
        // On this single-threaded test runtime, yielding lets the waiter run until it parks.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "the bound is reached");
        // Releasing one place does not wake the waiter yet (still above 6)...
        drop(held.pop());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "no wake-up above three quarters");
        // ...falling to three quarters does.
        drop(held.pop());
        let slot = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("task");
        assert_eq!(in_flight.count(), 7);
        drop(slot);
        drop(held);
        assert_eq!(in_flight.count(), 0);
    }

    #[tokio::test]
    async fn a_bound_of_one_still_wakes() {
        let in_flight = InFlight::new(1);
        let first = in_flight.acquire().await;
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.acquire().await })
        };
        tokio::task::yield_now().await;
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("task");
    }
}
