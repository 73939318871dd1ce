//! What a decision returns: new state, events, deadline changes, and whether the part is done.

use std::fmt;

use herald_bus::event::Member;
use herald_bus::{Event, EventFamily, Topic};

use crate::deadline::Deadline;
use crate::emit::Emitted;

/// A change to the deadlines of the state key, applied in the order the reaction made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadlineChange {
    /// Set (or replace) a deadline.
    Set(Deadline),
    /// Cancel the pending deadline of this name, if any.
    Cancel(String),
}

/// The outcome of one decision.
///
/// ```
/// use herald_choreography::{Deadline, Reaction};
/// # herald_bus::family! { #[derive(Debug)] pub enum Ev { Done(Done) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Done { id: String }
/// # impl herald_bus::Event for Done { const TYPE: &'static str = "x.Done"; const SCHEMA: &'static str = r#"{"type":"record","name":"Done","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
/// const OUT: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.out");
/// let reaction = Reaction::with_state(3_u32)
///     .emit(&OUT, Done { id: "a".into() })
///     .cancel_deadline("timeout")
///     .finish();
/// assert_eq!(reaction.emitted().len(), 1);
/// assert!(reaction.is_finished());
/// assert_eq!(Reaction::<u32>::keep().state(), None);
/// ```
#[must_use = "a reaction does nothing unless returned to the runtime"]
pub struct Reaction<S> {
    state: Option<S>,
    emitted: Vec<Emitted>,
    deadlines: Vec<DeadlineChange>,
    finished: bool,
}

impl<S> Reaction<S> {
    /// Nothing changes: the input is acknowledged and forgotten (a duplicate, a late
    /// outcome, an event of no interest).
    pub fn keep() -> Self {
        Reaction { state: None, emitted: Vec::new(), deadlines: Vec::new(), finished: false }
    }

    /// The state becomes `state`.
    pub fn with_state(state: S) -> Self {
        Reaction { state: Some(state), ..Reaction::keep() }
    }

    /// Replaces the new state (or sets one on a [`Reaction::keep`]).
    pub fn set_state(mut self, state: S) -> Self {
        self.state = Some(state);
        self
    }

    /// Emits `event` on `topic`. The event must belong to the topic's family: otherwise
    /// this does not compile. Its key is the event's aggregate id; the runtime gives it a
    /// deterministic id, the input's correlation id, and the input's id as causation id.
    ///
    /// ```compile_fail
    /// # herald_bus::family! { #[derive(Debug)] pub enum Ev { Done(Done) } }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Done { id: String }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Other { id: String }
    /// # impl herald_bus::Event for Done { const TYPE: &'static str = "x.Done"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
    /// # impl herald_bus::Event for Other { const TYPE: &'static str = "x.Other"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
    /// const OUT: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.out");
    /// // `Other` is not in the family of `OUT`: does not compile.
    /// let _ = herald_choreography::Reaction::<()>::keep().emit(&OUT, Other { id: "a".into() });
    /// ```
    pub fn emit<F, E>(mut self, topic: &Topic<F>, event: E) -> Self
    where
        F: EventFamily + Member<E>,
        E: Event + fmt::Debug,
    {
        self.emitted.push(Emitted::new(topic, event));
        self
    }

    /// Emits each of `events` on `topic`, in order.
    pub fn emit_all<F, E>(mut self, topic: &Topic<F>, events: impl IntoIterator<Item = E>) -> Self
    where
        F: EventFamily + Member<E>,
        E: Event + fmt::Debug,
    {
        self.emitted.extend(events.into_iter().map(|e| Emitted::new(topic, e)));
        self
    }

    /// Emits an event built by hand ([`Emitted::new`], [`Emitted::of_family`], with extra
    /// headers or an [exact topic](Emitted::exact_topic)).
    pub fn push(mut self, emitted: Emitted) -> Self {
        self.emitted.push(emitted);
        self
    }

    /// Sets (or replaces) a deadline of this state key.
    pub fn set_deadline(mut self, deadline: Deadline) -> Self {
        self.deadlines.push(DeadlineChange::Set(deadline));
        self
    }

    /// Cancels the pending deadline `name` of this state key, if any.
    pub fn cancel_deadline(mut self, name: impl Into<String>) -> Self {
        self.deadlines.push(DeadlineChange::Cancel(name.into()));
        self
    }

    /// This participant's part for this state key is finished: every pending deadline is
    /// dropped and none set afterwards is kept. The state stays (later inputs, duplicates
    /// and late outcomes still see it).
    pub fn finish(mut self) -> Self {
        self.finished = true;
        self
    }

    /// The new state, if it changed.
    pub fn state(&self) -> Option<&S> {
        self.state.as_ref()
    }

    /// The events to emit, in order.
    pub fn emitted(&self) -> &[Emitted] {
        &self.emitted
    }

    /// The deadline changes, in order.
    pub fn deadline_changes(&self) -> &[DeadlineChange] {
        &self.deadlines
    }

    /// Whether the part is finished.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes the reaction apart: (new state, events, deadline changes, finished).
    pub fn into_parts(self) -> (Option<S>, Vec<Emitted>, Vec<DeadlineChange>, bool) {
        (self.state, self.emitted, self.deadlines, self.finished)
    }
}

impl<S: fmt::Debug> fmt::Debug for Reaction<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reaction").field("state", &self.state).field("emitted", &self.emitted).field("deadlines", &self.deadlines).field("finished", &self.finished).finish()
    }
}
