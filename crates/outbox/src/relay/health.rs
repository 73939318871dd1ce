//! [`RelayHealth`]: what `/health` says about a relay.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use herald_bus::last_error::LastError;

/// Live state of a relay, shared with its `/health` endpoint.
#[derive(Debug, Default)]
pub struct RelayHealth {
    running: AtomicBool,
    connected: AtomicBool,
    owned: AtomicUsize,
    waiting: AtomicUsize,
    held: AtomicUsize,
    relayed: AtomicU64,
    failures: AtomicU64,
    failing: AtomicBool,
    last_error: LastError,
}

impl RelayHealth {
    /// Healthy: running, connected to PostgreSQL, no aggregate held, and the last batch
    /// was relayed (a failing delivery or database error makes it unhealthy until a batch
    /// succeeds and no aggregate is held).
    pub fn is_healthy(&self) -> bool {
        self.running.load(Ordering::Acquire)
            && self.connected.load(Ordering::Acquire)
            && !self.failing.load(Ordering::Acquire)
            && self.held.load(Ordering::Acquire) == 0
    }

    /// Buckets this relay owns now.
    pub fn owned_buckets(&self) -> usize {
        self.owned.load(Ordering::Acquire)
    }

    /// Buckets owned but not relayed yet: taken from a relay that did not release them
    /// (it vanished, or every session was cut by a PostgreSQL restart), they wait out the
    /// takeover delay first (see [`RelayOptions::takeover_delay`](super::RelayOptions::takeover_delay)).
    pub fn waiting_buckets(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Aggregates held back now: a row of theirs failed and is retried alone, their later
    /// rows wait (see [the relay's docs](super#failed-rows-held-aggregates)).
    pub fn held_aggregates(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Rows relayed (acknowledged and deleted) since start.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Acquire)
    }

    /// Rows not relayed since start: not queued, or their delivery failed (each attempt
    /// counts; a held aggregate's row counts at every retry).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.get().map(|(message, _)| message)
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Release);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        if !connected {
            self.owned.store(0, Ordering::Release);
            self.waiting.store(0, Ordering::Release);
            self.held.store(0, Ordering::Release);
        }
    }

    pub(crate) fn set_owned(&self, owned: usize) {
        self.owned.store(owned, Ordering::Release);
    }

    pub(crate) fn set_waiting(&self, waiting: usize) {
        self.waiting.store(waiting, Ordering::Release);
    }

    pub(crate) fn set_held(&self, held: usize) {
        self.held.store(held, Ordering::Release);
    }

    pub(crate) fn add_relayed(&self, n: u64) {
        self.relayed.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn add_failures(&self, n: u64) {
        self.failures.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn ok(&self) {
        self.failing.store(false, Ordering::Release);
    }

    pub(crate) fn failed(&self, error: String) {
        self.failing.store(true, Ordering::Release);
        self.last_error.set(error);
    }
}

impl herald_ops::HealthCheck for RelayHealth {
    fn check(&self) -> (bool, serde_json::Value) {
        let mut details = serde_json::json!({
            "connected": self.connected.load(Ordering::Acquire),
            "owned_buckets": self.owned_buckets(),
            "waiting_buckets": self.waiting_buckets(),
            "held_aggregates": self.held_aggregates(),
            "relayed": self.relayed(),
            "failures": self.failures(),
        });
        self.last_error.show_in(&mut details);
        (self.is_healthy(), details)
    }
}
