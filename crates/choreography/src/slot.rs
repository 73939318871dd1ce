//! The stored unit of one state key: the participant's state, its pending deadlines, and
//! whether its part is finished. The changelog stores exactly this.

use chrono::{DateTime, Utc};
use herald_bus::Metadata;

use crate::deadline::{Fired, Pending};
use crate::reaction::DeadlineChange;

/// The state of one key with its pending deadlines.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot<S> {
    state: S,
    pending: Vec<Pending>,
    finished: bool,
}

impl<S> Slot<S> {
    /// A fresh slot holding `state`, no deadlines, not finished.
    pub fn new(state: S) -> Self {
        Slot { state, pending: Vec::new(), finished: false }
    }

    /// A slot read back from the changelog.
    pub fn from_parts(state: S, pending: Vec<Pending>, finished: bool) -> Self {
        Slot { state, pending, finished }
    }

    /// The state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The pending deadlines, in the order they were set.
    pub fn deadlines(&self) -> &[Pending] {
        &self.pending
    }

    /// The pending deadline `name`, if any.
    pub fn deadline(&self, name: &str) -> Option<&Pending> {
        self.pending.iter().find(|p| p.deadline.name == name)
    }

    /// Whether the participant's part for this key is finished.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// When the earliest pending deadline comes due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.pending.iter().map(|p| p.deadline.at).min()
    }

    /// Removes and returns the earliest deadline due at `now` (ties: the one set first).
    /// A deadline is taken once: this is what makes it fire once.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Option<Pending> {
        self.take_due_where(now, |_| true)
    }

    /// [`take_due`](Self::take_due) among the deadlines `eligible` picks (the others, say
    /// ones whose reaction failed, stay where they are).
    pub fn take_due_where(&mut self, now: DateTime<Utc>, eligible: impl Fn(&Pending) -> bool) -> Option<Pending> {
        let index = self.pending.iter().enumerate().filter(|(_, p)| p.is_due(now) && eligible(p)).min_by_key(|(i, p)| (p.deadline.at, *i)).map(|(i, _)| i)?;
        Some(self.pending.remove(index))
    }

    /// Puts back a deadline that [`take_due`](Self::take_due) took and whose reaction was
    /// not applied (it panicked or cannot be written): it is pending again.
    pub fn put_back(&mut self, pending: Pending) {
        self.pending.push(pending);
    }

    /// Applies a reaction to `cause`: the new state if any, the deadline changes in order,
    /// then `finished` (which drops every pending deadline, including ones just set).
    pub fn apply(&mut self, state: Option<S>, changes: Vec<DeadlineChange>, finished: bool, cause: &Metadata) {
        if let Some(state) = state {
            self.state = state;
        }
        for change in changes {
            match change {
                DeadlineChange::Set(deadline) => {
                    self.pending.retain(|p| p.deadline.name != deadline.name);
                    self.pending.push(Pending { deadline, correlation_id: cause.correlation(), set_by: cause.id });
                }
                DeadlineChange::Cancel(name) => self.pending.retain(|p| p.deadline.name != name),
            }
        }
        if finished {
            self.finished = true;
        }
        if self.finished {
            self.pending.clear();
        }
    }
}

/// The input a pending deadline becomes, and the metadata it is delivered with: its
/// deterministic id, the saga's correlation id, the id of the input that set it as
/// causation id, the state key as subject.
pub fn fired(pending: &Pending, key: &str, source: &str) -> (Fired, Metadata) {
    let mut meta = Metadata::new(FIRED_TYPE, source, key);
    meta.id = pending.fired_id(key);
    meta.time = pending.deadline.at;
    meta.correlation_id = Some(pending.correlation_id.clone());
    meta.causation_id = Some(pending.set_by.to_string());
    let fired = Fired { name: pending.deadline.name.clone(), payload: pending.deadline.payload.clone(), at: pending.deadline.at };
    (fired, meta)
}

/// The `ce_type` of a fired deadline's metadata (it is never published).
pub const FIRED_TYPE: &str = "herald.choreography.DeadlineFired";
