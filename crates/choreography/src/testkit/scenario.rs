//! One participant under test.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_bus::event::Member;
use herald_bus::{Event, EventFamily, Metadata, Topic};
use serde::de::DeserializeOwned;

use super::raw::{test_meta, Raw};
use crate::deadline::Deadline;
use crate::declaration::{Declaration, Output};
use crate::input::Inputs;
use crate::participant::Participant;
use crate::reactor::{self, Emission};
use crate::slot::Slot;

/// A test step that fires more deadlines than this is taken for a participant that keeps
/// setting deadlines already due.
const MAX_FIRED_PER_STEP: usize = 100_000;

/// One participant, its states by key, and a manual clock.
///
/// ```
/// # herald_bus::family! { #[derive(Debug)] pub enum Ev { Ping(Ping), Pong(Pong) } }
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub struct Ping { id: String }
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub struct Pong { id: String }
/// # impl herald_bus::Event for Ping { const TYPE: &'static str = "x.Ping"; const SCHEMA: &'static str = r#"{"type":"record","name":"Ping","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
/// # impl herald_bus::Event for Pong { const TYPE: &'static str = "x.Pong"; const SCHEMA: &'static str = r#"{"type":"record","name":"Pong","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
/// # const PINGS: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.pings");
/// use herald_choreography::{declaration::{Output, DEADLINE}, testkit::Scenario, Deadline, Fired, Inputs, Participant, Reaction};
/// use std::time::Duration;
///
/// enum In { Ev(Ev), Late(Fired) }
/// /// Pongs 10 s after a ping.
/// struct Slow;
/// impl Participant for Slow {
///     const NAME: &'static str = "slow";
///     type Input = In;
///     type State = bool;
///     fn inputs(&self) -> Inputs<In> { Inputs::by_subject().on(&PINGS, In::Ev).on_deadline(In::Late) }
///     fn outputs(&self) -> Vec<Output> { vec![Output::of::<Pong, _>(&PINGS).after(&[DEADLINE]).terminal()] }
///     fn decide(&self, _: &bool, input: In, now: chrono::DateTime<chrono::Utc>) -> Reaction<bool> {
///         match input {
///             In::Ev(Ev::Ping(p)) => Reaction::keep().set_deadline(Deadline::after("pong", now, Duration::from_secs(10)).with_payload(p.id)),
///             In::Ev(Ev::Pong(_)) => Reaction::keep(),
///             In::Late(f) => Reaction::with_state(true).emit(&PINGS, Pong { id: f.payload }).finish(),
///         }
///     }
/// }
///
/// let mut t = Scenario::new(Slow);
/// t.when(&PINGS, Ping { id: "a".into() }).then_emitted_nothing();
/// assert!(t.deadline("a", "pong").is_some());
/// t.advance(Duration::from_secs(9)).then_emitted_nothing();
/// t.advance(Duration::from_secs(1)).then_emitted(&PINGS, &Pong { id: "a".into() });
/// t.advance(Duration::from_secs(60)).then_emitted_nothing(); // fired once
/// assert!(t.is_finished("a"));
/// ```
pub struct Scenario<P: Participant> {
    participant: P,
    inputs: Inputs<P::Input>,
    outputs: Vec<Output>,
    /// The participant's own topics ([`Declaration::own_topics`]): an output to one of them
    /// that an input named is dropped, as the engine drops it.
    own_topics: Vec<String>,
    source: String,
    slots: BTreeMap<String, Slot<P::State>>,
    now: DateTime<Utc>,
    inputs_sent: u64,
    last_input: Option<Raw>,
    last: Vec<Emission>,
    history: Vec<Raw>,
}

impl<P: Participant> Scenario<P> {
    /// `participant` with no state, at [`super::start_time`].
    pub fn new(participant: P) -> Self {
        let inputs = participant.inputs();
        let outputs = participant.outputs();
        let own_topics = Declaration::of(&participant).own_topics();
        Scenario { participant, inputs, outputs, own_topics, source: format!("/herald/{}", P::NAME), slots: BTreeMap::new(), now: super::start_time(), inputs_sent: 0, last_input: None, last: Vec::new(), history: Vec::new() }
    }

    /// The participant.
    pub fn participant(&self) -> &P {
        &self.participant
    }

    /// Whether the participant subscribes to `topic`.
    pub fn consumes(&self, topic: &str) -> bool {
        self.inputs.route(topic).is_some()
    }

    /// The manual clock's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// A precondition: `event` arrives on `topic` (like [`Scenario::when`]).
    #[track_caller]
    pub fn given<F, E>(&mut self, topic: &Topic<F>, event: E) -> &mut Self
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        self.when(topic, event)
    }

    /// `event` arrives on `topic` with fresh metadata (its own id as correlation id); the
    /// reaction's events replace the last step's.
    #[track_caller]
    pub fn when<F, E>(&mut self, topic: &Topic<F>, event: E) -> &mut Self
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        let meta = self.fresh_meta(E::TYPE, event.aggregate_id(), None);
        self.when_with(topic, event, meta)
    }

    /// `event` arrives on `topic` with `meta` (to choose its id or correlation id). Panics
    /// if the participant does not subscribe to `topic` (the test is wrong).
    #[track_caller]
    pub fn when_with<F, E>(&mut self, topic: &Topic<F>, event: E, meta: Metadata) -> &mut Self
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        assert!(self.consumes(topic.name()), "{} does not subscribe to {}", P::NAME, topic.name());
        let raw = Raw::encode(topic, &event, meta);
        self.last = self.deliver(&raw);
        self
    }

    /// `event` arrives on `topic` with `meta` and the other headers `extensions` (for a
    /// registration made with [`Inputs::on_with_headers`]). Panics like [`Scenario::when_with`].
    #[track_caller]
    pub fn when_with_headers<F, E>(&mut self, topic: &Topic<F>, event: E, meta: Metadata, extensions: crate::input::Extensions) -> &mut Self
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        assert!(self.consumes(topic.name()), "{} does not subscribe to {}", P::NAME, topic.name());
        let mut raw = Raw::encode(topic, &event, meta);
        raw.extensions = extensions;
        self.last = self.deliver(&raw);
        self
    }

    /// Fresh test metadata for an input (deterministic id; `correlation` or its own id).
    pub fn fresh_meta(&mut self, event_type: &str, subject: &str, correlation: Option<&str>) -> Metadata {
        self.inputs_sent += 1;
        test_meta(self.inputs_sent, event_type, subject, correlation, self.now)
    }

    /// The last input arrives again, same id and all (an at-least-once redelivery).
    pub fn redeliver(&mut self) -> &mut Self {
        let raw = self.last_input.clone().unwrap_or_else(|| panic!("redeliver: nothing was delivered yet"));
        self.last = self.deliver(&raw);
        self
    }

    /// The clock moves `by`; every deadline due by then fires once, earliest first (ties:
    /// by state key, then the order they were set). Their reactions' events replace the
    /// last step's.
    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.now = self.now.checked_add_signed(chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX)).unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.last = self.fire_due();
        self
    }

    /// Sets the clock (never backwards) without firing anything; [`Scenario::fire_due`] fires.
    pub fn set_now(&mut self, now: DateTime<Utc>) {
        self.now = self.now.max(now);
    }

    /// Fires every deadline due now and returns the reactions' events.
    pub fn fire_due(&mut self) -> Vec<Emission> {
        let mut emitted = Vec::new();
        for fired in 0.. {
            assert!(fired < MAX_FIRED_PER_STEP, "{}: more than {MAX_FIRED_PER_STEP} deadlines fired in one step (does a deadline set another at `now`?)", P::NAME);
            let due = self.slots.iter().filter_map(|(key, slot)| slot.next_due().filter(|at| *at <= self.now).map(|at| (at, key.clone()))).min();
            let Some((_, key)) = due else { break };
            let slot = self.slots.get_mut(&key).unwrap_or_else(|| unreachable!("the key was just found"));
            if let Some((_, out)) = reactor::fire_due(&self.participant, &self.inputs, &self.source, &key, slot, self.now) {
                emitted.extend(self.checked(out));
            }
        }
        emitted
    }

    /// Delivers an encoded input (what [`World`](super::World) does) and returns the
    /// reaction's events. An input of a topic the participant does not consume, or of a type
    /// not in the topic's family, is ignored (the runtime would not route it here).
    pub fn deliver(&mut self, raw: &Raw) -> Vec<Emission> {
        self.last_input = Some(raw.clone());
        let Some(route) = self.inputs.route(&raw.topic) else { return Vec::new() };
        let routed = route.decode_with(&raw.type_name, &raw.schema, &raw.datum, &raw.meta, &raw.extensions).unwrap_or_else(|e| panic!("{} on {} does not decode: {e}", raw.type_name, raw.topic));
        let Some(routed) = routed else { return Vec::new() };
        let slot = self.slots.entry(routed.key.clone()).or_insert_with(|| Slot::new(self.participant.initial(&routed.key)));
        let out = reactor::react(&self.participant, &self.source, slot, routed.input, &raw.meta, self.now);
        self.checked(out)
    }

    /// Refuses undeclared outputs, events that do not encode, and deadlines nothing
    /// would receive; drops, as the engine does, an output to a topic an input named that
    /// is one of the participant's own ([`Declaration::own_topics`]); records the rest.
    fn checked(&mut self, mut out: Vec<Emission>) -> Vec<Emission> {
        if !self.inputs.has_deadlines() && self.slots.values().any(|s| !s.deadlines().is_empty()) {
            panic!("{} sets deadlines but its inputs() register no on_deadline", P::NAME);
        }
        for emission in &out {
            let (topic, type_name) = (emission.event.topic(), emission.event.type_name());
            let topic = if emission.event.is_exact_topic() { crate::declaration::NAMED_BY_INPUT } else { topic };
            if !self.outputs.iter().any(|o| o.topic() == topic && o.type_name() == type_name) {
                panic!("{} emitted {type_name} on {topic}, which its outputs() do not declare", P::NAME);
            }
        }
        out.retain(|e| !(e.event.is_exact_topic() && self.own_topics.iter().any(|t| t == e.event.topic())));
        self.history.extend(out.iter().map(Raw::from_emission));
        out
    }

    /// The last step's events.
    pub fn emitted(&self) -> &[Emission] {
        &self.last
    }

    /// Every event emitted since the start, encoded.
    pub fn history(&self) -> &[Raw] {
        &self.history
    }

    /// The last step's events of type `E`.
    pub fn emitted_events<E: Event + DeserializeOwned>(&self) -> Vec<E> {
        self.last.iter().filter_map(|e| Raw::from_emission(e).decode::<E>()).collect()
    }

    /// Asserts the last step emitted `expected` on `topic`, exactly once.
    #[track_caller]
    pub fn then_emitted<F, E>(&mut self, topic: &Topic<F>, expected: &E) -> &mut Self
    where
        F: EventFamily + Member<E>,
        E: Event + std::fmt::Debug,
    {
        let want = serde_json::to_value(expected).unwrap_or_default();
        let matching = self.last.iter().filter(|e| e.event.topic() == topic.name() && e.event.type_name() == E::TYPE && e.event.to_json() == want).count();
        assert_eq!(matching, 1, "expected {} to emit {expected:?} on {} once; it emitted {:#?}", P::NAME, topic.name(), self.last);
        self
    }

    /// Asserts the last step emitted nothing.
    #[track_caller]
    pub fn then_emitted_nothing(&mut self) -> &mut Self {
        assert!(self.last.is_empty(), "expected {} to emit nothing; it emitted {:#?}", P::NAME, self.last);
        self
    }

    /// Asserts the last step emitted exactly `n` events.
    #[track_caller]
    pub fn then_emitted_count(&mut self, n: usize) -> &mut Self {
        assert_eq!(self.last.len(), n, "expected {} to emit {n} events; it emitted {:#?}", P::NAME, self.last);
        self
    }

    /// The state of `key`; panics if the key was never seen.
    #[track_caller]
    pub fn state(&self, key: &str) -> &P::State {
        self.slots.get(key).map(Slot::state).unwrap_or_else(|| panic!("{} has no state for key {key:?}", P::NAME))
    }

    /// The slot (state, deadlines, finished) of `key`, if seen.
    pub fn slot(&self, key: &str) -> Option<&Slot<P::State>> {
        self.slots.get(key)
    }

    /// The pending deadline `name` of `key`.
    pub fn deadline(&self, key: &str, name: &str) -> Option<&Deadline> {
        self.slots.get(key)?.deadline(name).map(|p| &p.deadline)
    }

    /// Every pending deadline of `key`.
    pub fn deadlines(&self, key: &str) -> Vec<&Deadline> {
        self.slots.get(key).map(|s| s.deadlines().iter().map(|p| &p.deadline).collect()).unwrap_or_default()
    }

    /// Whether the participant's part for `key` is finished.
    pub fn is_finished(&self, key: &str) -> bool {
        self.slots.get(key).is_some_and(Slot::is_finished)
    }
}
