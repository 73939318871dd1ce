//! Live state of a consumer, for health checks and status pages.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::last_error::LastError;

/// Live state of a consumer, for health checks and status pages.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    running: AtomicBool,
    assigned: AtomicUsize,
    poll_interval_exceeded: AtomicBool,
    pauses: AtomicU64,
    last_error: LastError,
    /// Partitions stopped on a record that cannot be dead-lettered, with the reason.
    parked: Mutex<BTreeMap<(String, i32), String>>,
}

impl ConsumerHealth {
    /// True while the consumer runs, has not been dropped from its group for exceeding
    /// `max.poll.interval.ms`, and no partition is parked (see [`ConsumerHealth::parked`]).
    pub fn is_healthy(&self) -> bool {
        self.running.load(Ordering::Relaxed) && !self.poll_interval_exceeded.load(Ordering::Relaxed) && self.lock_parked().is_empty()
    }

    /// Number of partitions currently assigned.
    pub fn assigned_partitions(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    /// The last client error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.get().map(|(message, _)| message)
    }

    /// The last client error and how long ago it happened, if any.
    pub fn last_error_aged(&self) -> Option<(String, std::time::Duration)> {
        self.last_error.get()
    }

    /// The last client error as health checks show it (see [`LastError::show_in`]).
    pub fn show_last_error(&self, details: &mut serde_json::Value) {
        self.last_error.show_in(details);
    }

    /// How often a partition was paused because its handler fell behind.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// Partitions stopped at a record that could not be handled *and* cannot be written to
    /// the dead-letter topic (too large for it, not authorized, ...), with the reason. Such
    /// a partition is paused and its offset not stored: nothing is lost, and an operator
    /// must act (raise the dead-letter topic's `max.message.bytes`, fix its ACLs), then
    /// restart the consumer or let the partition move to another member.
    ///
    /// Also listed, while it lasts: a partition whose dead letter is still not written
    /// after a while (its topic missing, the broker away: retried, so it heals by itself
    /// once the topic exists or the broker is back).
    pub fn parked(&self) -> Vec<(String, i32, String)> {
        self.lock_parked().iter().map(|((t, p), r)| (t.clone(), *p, r.clone())).collect()
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), String>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn park(&self, topic: &str, partition: i32, reason: String) {
        let mut parked = self.lock_parked();
        parked.insert((topic.to_owned(), partition), reason);
        metrics::gauge!("herald_consumer_parked_partitions").set(parked.len() as f64);
    }

    pub(crate) fn unpark(&self, topic: &str, partition: i32) {
        let mut parked = self.lock_parked();
        if parked.remove(&(topic.to_owned(), partition)).is_some() {
            metrics::gauge!("herald_consumer_parked_partitions").set(parked.len() as f64);
        }
    }

    pub(crate) fn count_pause(&self) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_consumer_pauses_total").increment(1);
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    pub(crate) fn poll_interval_exceeded(&self) {
        self.poll_interval_exceeded.store(true, Ordering::Relaxed);
    }

    pub(crate) fn add_assigned(&self, n: usize) {
        self.assigned.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn remove_assigned(&self, n: usize) {
        let _ = self.assigned.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| Some(a.saturating_sub(n)));
    }

    pub(crate) fn record_error(&self, error: String) {
        self.last_error.set(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_partition_makes_the_consumer_unhealthy_until_it_is_released() {
        let health = ConsumerHealth::default();
        health.set_running(true);
        assert!(health.is_healthy());
        health.park("t", 3, "dead letter too large".into());
        assert!(!health.is_healthy());
        assert_eq!(health.parked(), vec![("t".to_owned(), 3, "dead letter too large".to_owned())]);
        health.unpark("t", 3);
        assert!(health.is_healthy());
    }
}
