//! "On failure of a later step, undo mine", without a coordinator.
//!
//! A participant keeps what it did in its own state (the reservations it holds, the charge
//! it took) and a [`Compensation`] beside it. When it learns that the saga failed (an event
//! it consumes says so), [`Compensation::begin`] hands it, once, everything to undo, and it
//! emits the compensating events. A step that completes *after* that (a late reply) is
//! undone on arrival: [`Compensation::completed`] says so.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

/// What to do with a step that just completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed<T> {
    /// The saga is running: keep it (record it with the steps done).
    Keep(T),
    /// The saga already failed: undo it now.
    UndoNow(T),
}

/// Whether a participant's part of a saga is being compensated. Embed it in the state.
///
/// ```
/// use herald_choreography::compensation::{Compensation, Completed};
/// let mut undo = Compensation::default();
/// let mut held = vec!["SKU-1"];
/// assert_eq!(undo.completed("SKU-2"), Completed::Keep("SKU-2"));
/// held.push("SKU-2");
/// assert_eq!(undo.begin(&held), ["SKU-1", "SKU-2"], "the saga failed: undo both");
/// assert!(undo.begin(&held).is_empty(), "a second failure signal undoes nothing twice");
/// assert_eq!(undo.completed("SKU-3"), Completed::UndoNow("SKU-3"), "a late step is undone on arrival");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "herald.choreography")]
pub struct Compensation {
    /// Set once the saga failed for this participant.
    pub compensating: bool,
}

impl Compensation {
    /// Whether compensation began.
    pub fn is_compensating(&self) -> bool {
        self.compensating
    }

    /// A step of this participant completed: keep it, or undo it now if compensation began.
    pub fn completed<T>(&self, step: T) -> Completed<T> {
        if self.compensating { Completed::UndoNow(step) } else { Completed::Keep(step) }
    }

    /// The saga failed: the steps in `done` to undo, the first time only (afterwards an
    /// empty slice, so duplicate failure signals undo nothing twice).
    pub fn begin<'a, T>(&mut self, done: &'a [T]) -> &'a [T] {
        if std::mem::replace(&mut self.compensating, true) { &[] } else { done }
    }
}
