//! [`Verdict`]: what a saga's events say about it, whatever order they arrived in.
//!
//! The verdict is a pure function of the set of events (events of several topics reach
//! the tracker in no particular order, and a replay sees them again): it never depends on
//! the time it is computed. Time enters only in [`crate::state::assess`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::event::TrackedEvent;
use crate::model::{Role, SagaModel};

/// What the events alone say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Not finished: no outcome yet, or an outcome whose compensations (or required steps)
    /// have not all been seen.
    Running,
    /// A success outcome, every required step seen, nothing compensated.
    Completed,
    /// A failure outcome, and every step that ran was compensated.
    Compensated,
    /// The saga guarantee is violated in a way no later event can repair.
    Failed,
}

impl Phase {
    /// The phase's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Completed => "completed",
            Phase::Compensated => "compensated",
            Phase::Failed => "failed",
        }
    }

    /// Parses [`Phase::as_str`].
    pub fn parse(s: &str) -> Option<Phase> {
        [Phase::Running, Phase::Completed, Phase::Compensated, Phase::Failed].into_iter().find(|p| p.as_str() == s)
    }
}

/// The verdict on one saga's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The phase.
    pub phase: Phase,
    /// The outcome event type, if one was seen (the first, by time).
    pub outcome: Option<String>,
    /// Why it failed (phase [`Phase::Failed`]).
    pub violation: Option<String>,
    /// What the saga still waits for to finish (phase [`Phase::Running`]); if it stays
    /// missing after the outcome, the guarantee is violated.
    pub waiting: Vec<String>,
}

/// Judges a saga from its events (any order).
///
/// ```
/// # use herald_tracker::{SagaModel, TrackedEvent, verdict::{judge, Phase}};
/// # let model = SagaModel::new("shop", &herald_shop::saga::declarations(), &["shop.orders", "shop.inventory", "shop.payments"]);
/// # let ev = |t: &str| TrackedEvent { event_id: t.into(), correlation_id: "s".into(), causation_id: None, event_type: t.into(), source: String::new(), subject: "o".into(), time: chrono::DateTime::UNIX_EPOCH, topic: String::new(), partition: 0, offset: 0 };
/// let events = [ev("shop.orders.OrderPlaced"), ev("shop.inventory.StockReserved"), ev("shop.orders.OrderCancelled")];
/// let verdict = judge(&model, &events);
/// assert_eq!(verdict.phase, Phase::Running);
/// assert_eq!(verdict.waiting, ["shop.inventory.StockReleased (compensates shop.inventory.StockReserved)"]);
/// ```
pub fn judge(model: &SagaModel, events: &[TrackedEvent]) -> Verdict {
    let mut sorted: Vec<&TrackedEvent> = events.iter().collect();
    sorted.sort_by(|a, b| (a.time, &a.topic, a.partition, a.offset).cmp(&(b.time, &b.topic, b.partition, b.offset)));
    let (mut steps, mut compensated) = (BTreeSet::new(), BTreeSet::new());
    let (mut successes, mut failures) = (Vec::new(), Vec::new());
    for e in &sorted {
        match model.role(&e.event_type) {
            Role::Step => {
                steps.insert(e.event_type.clone());
            }
            Role::Compensation(step) => {
                compensated.insert(step);
            }
            Role::Success => successes.push(e.event_type.clone()),
            Role::FailureOutcome => failures.push(e.event_type.clone()),
            Role::Failure | Role::Progress => {}
        }
    }
    let outcomes: BTreeSet<&String> = successes.iter().chain(&failures).collect();
    let first_outcome = sorted.iter().find(|e| model.role(&e.event_type).is_outcome()).map(|e| e.event_type.clone());
    let verdict = |phase, violation: Option<String>, waiting| Verdict { phase, outcome: first_outcome.clone(), violation, waiting };
    if outcomes.len() > 1 || successes.len() > 1 || failures.len() > 1 {
        let all: Vec<&str> = successes.iter().chain(&failures).map(String::as_str).collect();
        return verdict(Phase::Failed, Some(format!("more than one outcome: {}", all.join(", "))), Vec::new());
    }
    if !successes.is_empty() {
        if let Some(step) = compensated.iter().next() {
            return verdict(Phase::Failed, Some(format!("completed, but step {step} was compensated")), Vec::new());
        }
        let missing: Vec<String> = model.required_for_success().iter().filter(|s| !steps.contains(*s)).cloned().collect();
        return if missing.is_empty() { verdict(Phase::Completed, None, Vec::new()) } else { verdict(Phase::Running, None, missing) };
    }
    if !failures.is_empty() {
        let waiting: Vec<String> = steps
            .iter()
            .filter(|s| !compensated.contains(*s))
            .map(|s| match model.compensation_of(s) {
                Some(c) => format!("{c} (compensates {s})"),
                None => format!("a compensation of {s}"),
            })
            .collect();
        return if waiting.is_empty() { verdict(Phase::Compensated, None, Vec::new()) } else { verdict(Phase::Running, None, waiting) };
    }
    verdict(Phase::Running, None, vec![format!("an outcome ({})", model.outcomes().join(" or "))])
}
