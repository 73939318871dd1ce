//! One reaction step, the same for the test kit and the runtime: decide, apply to the
//! slot, and give every emitted event its metadata.
//!
//! # What the Kafka runtime does around it
//! For each record of a subscribed topic (read_committed), in partition order:
//! 1. find its [`Route`](crate::input::Route) by topic and decode it with the writer schema
//!    ([`Route::decode`](crate::input::Route::decode)), which also gives the state key;
//! 2. if the route's key [needs repartitioning](crate::KeyKind::needs_repartition), copy the
//!    record unchanged (payload and headers, so its `ce_id` and correlation survive) to
//!    [`Declaration::repartition_topic`](crate::declaration::Declaration::repartition_topic)
//!    keyed by the state key, and react when it is read back from there;
//! 3. load the key's [`Slot`] (from the changelog when the partition was assigned, or
//!    [`Participant::initial`]) and call [`react`];
//! 4. in one transaction with the input's offset: each [`Emission`] as a record (key
//!    [`Emitted::key`], payload the codec's framing of [`Emitted::encode`], headers
//!    `meta.to_headers()`), and the slot's [`changelog`](crate::changelog) record on
//!    [`Declaration::changelog_topic`](crate::declaration::Declaration::changelog_topic).
//!
//! Deadlines: keep the keys of a partition ordered by [`Slot::next_due`] and call
//! [`fire_due`] when the clock passes it, inside the same kind of transaction.

use chrono::{DateTime, Utc};
use herald_bus::Metadata;

use crate::emit::Emitted;
use crate::ids;
use crate::participant::Participant;
use crate::reaction::Reaction;
use crate::slot::{self, Slot};

/// An emitted event with the metadata it is published with.
#[derive(Debug)]
pub struct Emission {
    /// Deterministic id, correlation, causation, subject, type, time.
    pub meta: Metadata,
    /// The event and its topic.
    pub event: Emitted,
    /// The span id of the input's `traceparent` (the span this event's span continues),
    /// when the input carried one.
    pub cause_span: Option<u64>,
}

/// Reacts to `input` (delivered with `cause`'s metadata) for the key held in `slot`:
/// calls [`Participant::decide`], applies the reaction to the slot, and returns the
/// emitted events with their metadata ([`ids::metadata`]). `source` is the `ce_source`.
pub fn react<P: Participant>(participant: &P, source: &str, slot: &mut Slot<P::State>, input: P::Input, cause: &Metadata, now: DateTime<Utc>) -> Vec<Emission> {
    let reaction = participant.decide(slot.state(), input, now);
    apply(source, slot, reaction, cause, now, P::NAME)
}

/// Applies `reaction` of participant `name` to `slot`; its events with their metadata.
fn apply<S>(source: &str, slot: &mut Slot<S>, reaction: Reaction<S>, cause: &Metadata, now: DateTime<Utc>, name: &str) -> Vec<Emission> {
    let (state, emitted, changes, finished) = reaction.into_parts();
    slot.apply(state, changes, finished, cause);
    emitted
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let meta = match event.id() {
                Some(id) => ids::metadata_with_id(id, source, cause, event.type_name(), event.key(), now),
                None => ids::metadata(name, source, cause, index, event.type_name(), event.key(), now),
            };
            Emission { meta, event, cause_span: cause.trace.map(|t| t.span_id) }
        })
        .collect()
}

/// A participant's `decide` panicked (a bug: its input can never be reacted to).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{participant}'s decide panicked: {message}")]
pub struct Panicked {
    /// The participant's name.
    pub participant: &'static str,
    /// The panic's message (its payload when a string).
    pub message: String,
}

/// Why a reaction was not applied (its slot is as it was): `decide` panicked, or what it
/// decided cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotApplied {
    /// `decide` panicked.
    #[error(transparent)]
    Panicked(#[from] Panicked),
    /// The reaction's vetting refused it: an event or the state that its schema refuses
    /// (a bug, or a value from the input that no schema of the output allows).
    #[error("{participant}'s reaction cannot be written: {reason}")]
    Unwritable {
        /// The participant's name.
        participant: &'static str,
        /// What cannot be written, and why.
        reason: String,
    },
}

/// [`react`], catching a panic of [`Participant::decide`] (the engine's way: one input
/// that makes `decide` panic must not stop every other), and vetting the reaction before it
/// is applied: `vet` sees the state it was decided on and the reaction (its new state and
/// events) and returns what the caller needs to
/// write it (the engine: each event's payload), or refuses it. On a panic or a refusal the
/// slot is as it was.
///
/// ```
/// use chrono::Utc;
/// use herald_bus::Metadata;
/// use herald_choreography::reactor::{self, NotApplied};
/// use herald_choreography::slot::Slot;
/// use herald_choreography::{Inputs, Participant, Reaction};
///
/// struct Counter;
/// impl Participant for Counter {
///     const NAME: &'static str = "counter";
///     type Input = i64;
///     type State = i64;
///     fn inputs(&self) -> Inputs<i64> { Inputs::new() }
///     fn outputs(&self) -> Vec<herald_choreography::declaration::Output> { Vec::new() }
///     fn decide(&self, state: &i64, input: i64, _now: chrono::DateTime<Utc>) -> Reaction<i64> {
///         Reaction::with_state(state + input)
///     }
/// }
///
/// let mut slot = Slot::new(0);
/// let cause = Metadata::new("Added", "/test", "counter-1");
/// let refused = reactor::try_react(&Counter, "/test", &mut slot, 5, &cause, Utc::now(), |_current, reaction| {
///     match reaction.state() {
///         Some(total) if *total > 3 => Err(format!("{total} is over the limit")),
///         _ => Ok(()),
///     }
/// });
/// assert!(matches!(refused, Err(NotApplied::Unwritable { .. })));
/// assert_eq!(*slot.state(), 0);
/// ```
pub fn try_react<P: Participant, T>(participant: &P, source: &str, slot: &mut Slot<P::State>, input: P::Input, cause: &Metadata, now: DateTime<Utc>, vet: impl FnOnce(&P::State, &Reaction<P::State>) -> Result<T, String>) -> Result<(Vec<Emission>, T), NotApplied> {
    let state = slot.state();
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| participant.decide(state, input, now)));
    let reaction = decided.map_err(|payload| Panicked { participant: P::NAME, message: herald_bus::panics::describe(&*payload) })?;
    let vetted = vet(state, &reaction).map_err(|reason| NotApplied::Unwritable { participant: P::NAME, reason })?;
    Ok((apply(source, slot, reaction, cause, now, P::NAME), vetted))
}

/// Fires the earliest deadline of `slot` due at `now`, if any: takes it (so it fires once)
/// and reacts to it. Returns the fired input's metadata and the reaction's events; `None`
/// when nothing is due. A participant that sets deadlines without registering
/// [`Inputs::on_deadline`](crate::Inputs::on_deadline) loses them when they come due (no
/// events); the test kit refuses such a participant.
pub fn fire_due<P: Participant>(participant: &P, inputs: &crate::Inputs<P::Input>, source: &str, key: &str, slot: &mut Slot<P::State>, now: DateTime<Utc>) -> Option<(Metadata, Vec<Emission>)> {
    let pending = slot.take_due(now)?;
    let (fired, meta) = slot::fired(&pending, key, source);
    let Some(input) = inputs.fired(fired) else { return Some((meta, Vec::new())) };
    let emitted = react(participant, source, slot, input, &meta, now);
    Some((meta, emitted))
}

/// [`fire_due`] of the earliest due deadline that `eligible` picks, catching a panic of
/// [`Participant::decide`] and vetting the reaction like [`try_react`]. A reaction not
/// applied leaves the slot as it was, the deadline included: it is still pending, and
/// due, so the caller decides when it fires again (the returned metadata's `id` is the
/// deadline's [`fired_id`](crate::deadline::Pending::fired_id), its `time` the due time),
/// and may leave it out of later firings with `eligible`.
///
/// ```
/// use chrono::{Duration, Utc};
/// use herald_bus::Metadata;
/// use herald_choreography::reactor::{self, NotApplied};
/// use herald_choreography::slot::Slot;
/// use herald_choreography::{Deadline, Inputs, Participant, Reaction};
///
/// struct Reminder;
/// impl Participant for Reminder {
///     const NAME: &'static str = "reminder";
///     type Input = String;
///     type State = u32;
///     fn inputs(&self) -> Inputs<String> { Inputs::new().on_deadline(|fired| fired.name) }
///     fn outputs(&self) -> Vec<herald_choreography::declaration::Output> { Vec::new() }
///     fn decide(&self, sent: &u32, input: String, now: chrono::DateTime<Utc>) -> Reaction<u32> {
///         match input.as_str() {
///             "start" => Reaction::keep().set_deadline(Deadline::at("remind", now + Duration::seconds(1))),
///             _ => panic!("no mail server"),
///         }
///     }
/// }
///
/// let (now, cause) = (Utc::now(), Metadata::new("Started", "/test", "r-1"));
/// let mut slot = Slot::new(0);
/// reactor::react(&Reminder, "/test", &mut slot, "start".to_owned(), &cause, now);
/// let later = now + Duration::seconds(2);
/// let (fired, refused) = reactor::try_fire_due(&Reminder, &Reminder.inputs(), "/test", "r-1", &mut slot, later, |_| true, |_, _| Ok(())).unwrap();
/// assert!(matches!(refused, Err(NotApplied::Panicked { .. })));
/// assert_eq!(slot.deadline("remind").map(|p| p.fired_id("r-1")), Some(fired.id), "still pending");
/// // Left out, it does not fire.
/// assert!(reactor::try_fire_due(&Reminder, &Reminder.inputs(), "/test", "r-1", &mut slot, later, |p| p.fired_id("r-1") != fired.id, |_, _| Ok(())).is_none());
/// ```
#[allow(clippy::type_complexity)]
#[allow(clippy::too_many_arguments)]
pub fn try_fire_due<P: Participant, T: Default>(
    participant: &P,
    inputs: &crate::Inputs<P::Input>,
    source: &str,
    key: &str,
    slot: &mut Slot<P::State>,
    now: DateTime<Utc>,
    eligible: impl Fn(&crate::deadline::Pending) -> bool,
    vet: impl FnOnce(&P::State, &Reaction<P::State>) -> Result<T, String>,
) -> Option<(Metadata, Result<(Vec<Emission>, T), NotApplied>)> {
    let pending = slot.take_due_where(now, eligible)?;
    let (fired, meta) = slot::fired(&pending, key, source);
    let Some(input) = inputs.fired(fired) else { return Some((meta, Ok((Vec::new(), T::default())))) };
    let emitted = try_react(participant, source, slot, input, &meta, now, vet);
    if emitted.is_err() {
        slot.put_back(pending);
    }
    Some((meta, emitted))
}
