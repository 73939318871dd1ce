//! [`State`]: a saga's state at a given time, from its [`Verdict`] and how long it has been
//! quiet.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::verdict::{Phase, Verdict};

/// The state of a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// In progress, and it moved within the stuck threshold.
    Running,
    /// Ended with a success outcome; every required step ran, nothing was compensated.
    Completed,
    /// Ended with a failure outcome; every step that ran was compensated.
    Compensated,
    /// The saga guarantee is violated: two outcomes, a completed saga with a compensated or
    /// missing step, or a failed one whose steps were not all compensated within the stuck
    /// threshold after its last event (a compensation that failed). The reason says which.
    Failed,
    /// No outcome, and no progress for longer than the stuck threshold.
    Stuck,
}

impl State {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Completed => "completed",
            State::Compensated => "compensated",
            State::Failed => "failed",
            State::Stuck => "stuck",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A saga's state at a time, with the reason when it is not fine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    /// The state.
    pub state: State,
    /// Whether the saga needs someone: stuck, or failed because something it waits for
    /// never came (a compensation that failed). `herald saga list --stuck` lists these.
    pub stuck: bool,
    /// Why it is failed, stuck or still running.
    pub reason: Option<String>,
}

/// The state of a saga with `verdict`, last moved at `last_event`, seen at `now`, when
/// sagas quiet for longer than `stuck_after` are stuck.
///
/// ```
/// use std::time::Duration;
/// use herald_tracker::{state::{assess, State}, verdict::{Phase, Verdict}};
/// let running = Verdict { phase: Phase::Running, outcome: None, violation: None, waiting: vec!["an outcome".into()] };
/// let t0 = chrono::DateTime::UNIX_EPOCH;
/// assert_eq!(assess(&running, t0, t0 + chrono::Duration::seconds(10), Duration::from_secs(60)).state, State::Running);
/// assert_eq!(assess(&running, t0, t0 + chrono::Duration::seconds(61), Duration::from_secs(60)).state, State::Stuck);
/// ```
pub fn assess(verdict: &Verdict, last_event: DateTime<Utc>, now: DateTime<Utc>, stuck_after: Duration) -> Assessment {
    let quiet = (now - last_event).to_std().unwrap_or_default();
    let fine = |state| Assessment { state, stuck: false, reason: None };
    match verdict.phase {
        Phase::Completed => fine(State::Completed),
        Phase::Compensated => fine(State::Compensated),
        Phase::Failed => Assessment { state: State::Failed, stuck: false, reason: verdict.violation.clone() },
        Phase::Running => {
            let waiting = verdict.waiting.join(", ");
            let quiet_for = humanize(quiet);
            match (&verdict.outcome, quiet > stuck_after) {
                (_, false) => Assessment { state: State::Running, stuck: false, reason: (!waiting.is_empty()).then(|| format!("waiting for {waiting}")) },
                (Some(outcome), true) => Assessment {
                    state: State::Failed,
                    stuck: true,
                    reason: Some(format!("saga guarantee violated: {outcome}, then nothing for {quiet_for}; never saw {waiting}")),
                },
                (None, true) => Assessment { state: State::Stuck, stuck: true, reason: Some(format!("no progress for {quiet_for}; waiting for {waiting}")) },
            }
        }
    }
}

/// `90s` → `1m30s`; whole seconds.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

