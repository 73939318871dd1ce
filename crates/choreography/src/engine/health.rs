//! What an engine shows its operators: `/health` (through herald-ops) and metrics.
//!
//! Metrics (Prometheus names, recorded through the `metrics` facade):
//! - `herald_choreography_reactions_total` (counter; reactions/s is its rate), labels
//!   `participant`, `kind` = `input` | `deadline`;
//! - `herald_choreography_commit_seconds` (histogram): commit latency (offsets + commit);
//! - `herald_choreography_transaction_reactions` (histogram): reactions per transaction;
//! - `herald_choreography_transactions_total` (counter), label `outcome` = `committed` |
//!   `aborted` | `fatal`;
//! - `herald_choreography_open_transaction_age_seconds` (gauge, 0 when none is open; set
//!   every second by a task of its own, see [`keep_open_transaction_age`]);
//! - `herald_choreography_deadlines_pending`, `herald_choreography_deadlines_overdue` (gauges,
//!   counted once a second);
//! - `herald_choreography_partitions_catching_up` (gauge): partitions restored with a backlog
//!   whose deadlines wait for their inputs (see `catch_up`);
//! - `herald_choreography_deadlines_failing` (gauge): deadlines whose reaction panicked or
//!   cannot be written, kept pending to fire again when their partition is restored;
//! - `herald_choreography_reactions_panicked_total` (counter), labels `participant`,
//!   `kind` = `input` (dead-lettered) | `deadline` (kept pending);
//! - `herald_choreography_reactions_unwritable_total` (counter), the same labels: reactions
//!   whose event or state does not encode, refused whole;
//! - `herald_choreography_outputs_dropped_total` (counter), labels `participant`,
//!   `reason` = `unknown-topic` | `own-topic`;
//! - `herald_choreography_inputs_skipped_total` (counter), labels `participant`, `topic`:
//!   inputs of unknown types moved past under
//!   [`UnknownTypes::Skip`](herald_bus::UnknownTypes) (see
//!   [`EngineSettings::unknown_types`](super::EngineSettings::unknown_types)).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

use herald_bus::last_error::LastError;
use herald_bus::ConsumerHealth;

/// Live state of an engine.
#[derive(Debug, Default)]
pub struct EngineHealth {
    pub(crate) consumer: Mutex<Option<Arc<ConsumerHealth>>>,
    /// The repartitioner's consumer, when inputs are repartitioned.
    pub(crate) repartitioner: Mutex<Option<Arc<ConsumerHealth>>>,
    open_since: Mutex<Option<Instant>>,
    committed: AtomicU64,
    aborted: AtomicU64,
    rebuilt: AtomicU64,
    in_doubt: AtomicU64,
    given_up: AtomicU64,
    reactions: AtomicU64,
    pending: AtomicU64,
    overdue: AtomicU64,
    restoring: AtomicU64,
    failing: AtomicBool,
    /// The engine is stopping on an error (its coordinator ended, an input gained
    /// partitions): unhealthy for good.
    ended: AtomicBool,
    last_error: LastError,
    /// Input partitions held by a transaction that does not end (see `hanging`).
    hanging: Mutex<Option<String>>,
    /// Deadlines whose reaction was not applied, kept pending: why, by (partition, key,
    /// due time).
    failing_deadlines: Mutex<FailingDeadlines>,
}

/// Why each failing deadline failed, by (partition, key, due time).
type FailingDeadlines = BTreeMap<(i32, String, DateTime<Utc>), String>;

/// Most failing deadlines `/health` lists (it counts them all).
const FAILING_SHOWN: usize = 20;

impl EngineHealth {
    pub(crate) fn opened(&self) {
        *self.open_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub(crate) fn closed(&self) {
        *self.open_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn count_commit(&self, reactions: usize) {
        self.committed.fetch_add(1, Ordering::Relaxed);
        self.reactions.fetch_add(reactions as u64, Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
    }

    /// Every assigned partition's state is restored: clears the failing mark an earlier
    /// failed restore set (the next failed transaction sets it again).
    pub(crate) fn restored(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }

    pub(crate) fn count_abort(&self, fatal: bool, error: String) {
        if fatal { &self.rebuilt } else { &self.aborted }.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        self.last_error.set(error);
    }

    /// Unhealthy, for `error`, until the next commit.
    pub(crate) fn report(&self, error: String) {
        self.failing.store(true, Ordering::Relaxed);
        self.last_error.set(error);
    }

    /// A commit whose outcome was unknown turned out committed.
    pub(crate) fn count_in_doubt_committed(&self) {
        self.in_doubt.fetch_add(1, Ordering::Relaxed);
    }

    /// A revocation the consumer stopped waiting for was found by the coordinator.
    pub(crate) fn count_given_up(&self) {
        self.given_up.fetch_add(1, Ordering::Relaxed);
    }

    /// The engine is stopping on an error (`reason`).
    pub(crate) fn ending(&self, reason: String) {
        self.ended.store(true, Ordering::Relaxed);
        self.last_error.set(reason);
    }

    pub(crate) fn set_deadlines(&self, pending: u64, overdue: u64) {
        self.pending.store(pending, Ordering::Relaxed);
        self.overdue.store(overdue, Ordering::Relaxed);
    }

    pub(crate) fn set_hanging(&self, reason: Option<String>) {
        let mut hanging = self.hanging.lock().unwrap_or_else(|p| p.into_inner());
        match (&reason, hanging.is_some()) {
            (Some(reason), false) => tracing::error!(reason, "inputs held by a transaction"),
            (None, true) => tracing::info!("the inputs held by a transaction are free again"),
            _ => {}
        }
        *hanging = reason;
    }

    /// Why input partitions the engine owns wait for a transaction that does not end (see
    /// `EngineSettings::hanging_input_after`), if they do.
    pub fn hanging(&self) -> Option<String> {
        self.hanging.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn deadline_failed(&self, partition: i32, key: &str, at: DateTime<Utc>, reason: String) {
        let mut failing = self.lock_failing();
        failing.insert((partition, key.to_owned(), at), reason);
        metrics::gauge!("herald_choreography_deadlines_failing").set(failing.len() as f64);
    }

    /// Forgets the failing deadlines for which `pending` says false (fired since, cancelled,
    /// their partition gone).
    pub(crate) fn keep_failing_deadlines(&self, pending: impl Fn(i32, &str, DateTime<Utc>) -> bool) {
        let mut failing = self.lock_failing();
        let before = failing.len();
        failing.retain(|(partition, key, at), _| pending(*partition, key, *at));
        if failing.len() != before {
            metrics::gauge!("herald_choreography_deadlines_failing").set(failing.len() as f64);
        }
    }

    fn lock_failing(&self) -> std::sync::MutexGuard<'_, FailingDeadlines> {
        self.failing_deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deadlines whose reaction panicked or cannot be written, with why: (partition, key,
    /// due time, reason). Each stays pending in its key's state (and the changelog) and
    /// fires again when its partition is restored, a restart with the bug fixed, say; not
    /// at every tick meanwhile. The engine stays healthy (a restart does not fix a bug);
    /// `/health` lists them (`deadlines_failing`).
    pub fn deadlines_failing(&self) -> Vec<(i32, String, DateTime<Utc>, String)> {
        self.lock_failing().iter().map(|((p, k, at), why)| (*p, k.clone(), *at, why.clone())).collect()
    }

    pub(crate) fn set_restoring(&self, partitions: u64) {
        self.restoring.store(partitions, Ordering::Relaxed);
    }

    /// Transactions committed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Transactions aborted (abortable errors).
    pub fn aborted(&self) -> u64 {
        self.aborted.load(Ordering::Relaxed)
    }

    /// Producers rebuilt after a fatal error.
    pub fn rebuilt(&self) -> u64 {
        self.rebuilt.load(Ordering::Relaxed)
    }

    /// Commits that failed with an unknown outcome ([`outcome_unknown`](super::outcome_unknown)) and were
    /// found committed by the broker, so their inputs were not reacted to again. Also
    /// counted in [`committed`](Self::committed) and [`rebuilt`](Self::rebuilt).
    pub fn commits_in_doubt(&self) -> u64 {
        self.in_doubt.load(Ordering::Relaxed)
    }

    /// Revocations the consumer stopped waiting for (the coordinator was busy past
    /// `call_timeout`) that the coordinator found with a transaction open or in doubt: its
    /// partitions were forgotten as lost and nothing of theirs committed.
    pub fn revocations_given_up(&self) -> u64 {
        self.given_up.load(Ordering::Relaxed)
    }

    /// Reactions committed.
    pub fn reactions(&self) -> u64 {
        self.reactions.load(Ordering::Relaxed)
    }

    /// Deadlines pending in the owned partitions.
    pub fn deadlines_pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Pending deadlines already due.
    pub fn deadlines_overdue(&self) -> u64 {
        self.overdue.load(Ordering::Relaxed)
    }

    /// Partitions whose state is being read back.
    pub fn restoring(&self) -> u64 {
        self.restoring.load(Ordering::Relaxed)
    }

    /// How long the open transaction has been open.
    pub fn open_transaction_age(&self) -> Option<std::time::Duration> {
        self.open_since.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.elapsed())
    }
}

impl EngineHealth {
    /// The failing deadlines as `/health` shows them: a count and the first few.
    fn failing_shown(&self) -> serde_json::Value {
        let failing = self.lock_failing();
        let shown = failing.iter().take(FAILING_SHOWN).map(|((partition, key, at), reason)| serde_json::json!({"partition": partition, "key": key, "due": at.to_rfc3339(), "reason": reason}));
        serde_json::json!({"count": failing.len(), "first": shown.collect::<Vec<_>>()})
    }
}

impl herald_ops::HealthCheck for EngineHealth {
    fn check(&self) -> (bool, serde_json::Value) {
        let consumer = self.consumer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (consumer_ok, consumer_details) = consumer.map_or((false, serde_json::Value::Null), |c| c.check());
        let repartitioner = self.repartitioner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (repartitioner_ok, repartitioner_details) = repartitioner.map_or((true, serde_json::Value::Null), |c| c.check());
        let hanging = self.hanging();
        let healthy = consumer_ok && repartitioner_ok && !self.failing.load(Ordering::Relaxed) && !self.ended.load(Ordering::Relaxed) && hanging.is_none();
        let mut details = serde_json::json!({
                "consumer": consumer_details,
                "repartitioner": repartitioner_details,
                "transactions_committed": self.committed(),
                "transactions_aborted": self.aborted(),
                "producers_rebuilt": self.rebuilt(),
                "reactions": self.reactions(),
                "open_transaction_age_ms": self.open_transaction_age().map(|d| d.as_millis() as u64),
                "deadlines_pending": self.deadlines_pending(),
                "deadlines_overdue": self.deadlines_overdue(),
                "partitions_restoring": self.restoring(),
                "hanging": hanging,
                "deadlines_failing": self.failing_shown(),
        });
        self.last_error.show_in(&mut details);
        (healthy, details)
    }
}

/// How often [`keep_open_transaction_age`] sets its gauge.
pub(crate) const AGE_EVERY: Duration = Duration::from_secs(1);

/// Sets `gauge` to the age of `health`'s open transaction (0 when none is open) every
/// `every`, for as long as it runs. Not the coordinator's job: a transaction ages most
/// while the coordinator is stuck in one of its calls, and the coordinator's own updates
/// stood still exactly then (an outside probe read 0.001 s while `/health` said 12 s).
pub(crate) async fn keep_open_transaction_age(health: Arc<EngineHealth>, gauge: metrics::Gauge, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        gauge.set(health.open_transaction_age().map_or(0.0, |age| age.as_secs_f64()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_open_transaction_age_gauge_follows_the_health_without_the_coordinator() {
        let recorder = herald_ops::prometheus().expect("the exporter's settings").build_recorder();
        let gauge = metrics::with_local_recorder(&recorder, || metrics::gauge!("age_seconds"));
        let handle = recorder.handle();
        let age = move || {
            let text = handle.render();
            text.lines().find_map(|l| l.strip_prefix("age_seconds ")).and_then(|v| v.trim().parse::<f64>().ok())
        };
        let health = Arc::new(EngineHealth::default());
        health.opened();
        let keeping = tokio::spawn(keep_open_transaction_age(health.clone(), gauge, Duration::from_millis(10)));
        // Nobody but the keeper touches the gauge: it grows while the transaction stays open.
        herald_testkit::wait_until(Duration::from_secs(10), "the age shown to grow", || async { age().is_some_and(|a| a >= 0.2) }).await;
        health.closed();
        herald_testkit::wait_until(Duration::from_secs(10), "the age shown as 0 once closed", || async { age() == Some(0.0) }).await;
        keeping.abort();
    }
}
