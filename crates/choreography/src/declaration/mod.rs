//! What a participant consumes and emits, declared, so a saga can be checked and drawn
//! before it runs.
//!
//! What it consumes comes from its typed registration ([`Inputs`](crate::Inputs)); what it
//! emits it lists as [`Output`]s, each saying which inputs cause it and what role it plays
//! in the saga (a step that holds something, a compensation, a failure, a terminal event).
//! The test kit refuses an emitted event that was not declared, so the list stays honest.

mod check;
mod diagram;

pub use check::{check, Finding, Problem, Report};
pub use diagram::diagram;

use herald_bus::event::Member;
use herald_bus::{Event, EventFamily, Topic};

use crate::input::KeyKind;
use crate::participant::Participant;

/// The cause name of a reaction to a deadline, in [`Output::after`].
pub const DEADLINE: &str = "deadline";

/// The topic of an [`Output::to_named_topic`]: named at run time by an input.
pub const NAMED_BY_INPUT: &str = "(named by the input)";

/// One event type a participant emits, and its role in the saga.
///
/// ```
/// use herald_choreography::declaration::{Output, DEADLINE};
/// # herald_bus::family! { #[derive(Debug)] pub enum Ev { Cancelled(Cancelled) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Cancelled { id: String }
/// # impl herald_bus::Event for Cancelled { const TYPE: &'static str = "x.Cancelled"; const SCHEMA: &'static str = r#"{"type":"record","name":"Cancelled","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
/// const ORDERS: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.orders");
/// let out = Output::of::<Cancelled, _>(&ORDERS).after(&["x.Declined", DEADLINE]).failure().terminal();
/// assert!(out.is_terminal() && out.is_failure() && out.has_schema());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    topic: String,
    type_name: &'static str,
    has_schema: bool,
    after: Vec<String>,
    step: bool,
    compensates: Option<String>,
    terminal: bool,
    failure: bool,
}

impl Output {
    /// Event type `E` emitted on `topic` (a member of the topic's family, or this does not
    /// compile).
    pub fn of<E: Event, F: EventFamily + Member<E>>(topic: &Topic<F>) -> Self {
        Output {
            topic: topic.name().to_owned(),
            type_name: E::TYPE,
            has_schema: F::schemas().latest(E::TYPE).is_some(),
            after: Vec::new(),
            step: false,
            compensates: None,
            terminal: false,
            failure: false,
        }
    }

    /// Event type `E` emitted on a topic that an input names at run time (a reply topic
    /// named by a command; see [`Emitted::exact_topic`](crate::emit::Emitted::exact_topic)).
    /// Its topic is [`NAMED_BY_INPUT`]; it is terminal (what reads it is outside the saga).
    ///
    /// ```
    /// use herald_choreography::declaration::{Output, NAMED_BY_INPUT};
    /// # herald_bus::family! { #[derive(Debug)] pub enum Replies { Reply(Reply) } }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Reply { id: String }
    /// # impl herald_bus::Event for Reply { const TYPE: &'static str = "x.Reply"; const SCHEMA: &'static str = r#"{"type":"record","name":"Reply","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
    /// let out = Output::to_named_topic::<Reply, Replies>();
    /// assert_eq!(out.topic(), NAMED_BY_INPUT);
    /// assert!(out.is_terminal());
    /// ```
    pub fn to_named_topic<E: Event, F: EventFamily + Member<E>>() -> Self {
        Output { topic: NAMED_BY_INPUT.to_owned(), has_schema: F::schemas().latest(E::TYPE).is_some(), ..Output::untyped(NAMED_BY_INPUT, E::TYPE, false) }.terminal()
    }

    /// Event type `type_name` on `topic`, declared without a Rust type (a service in another
    /// language); `has_schema` says whether its schema is known.
    pub fn untyped(topic: &str, type_name: &'static str, has_schema: bool) -> Self {
        Output { topic: topic.to_owned(), type_name, has_schema, after: Vec::new(), step: false, compensates: None, terminal: false, failure: false }
    }

    /// The input event types (or [`DEADLINE`]) whose reactions emit it.
    pub fn after(mut self, causes: &[&str]) -> Self {
        self.after.extend(causes.iter().map(|c| (*c).to_owned()));
        self
    }

    /// It records something done that a later failure must undo (a reservation, a charge).
    pub fn step(mut self) -> Self {
        self.step = true;
        self
    }

    /// It undoes the step of type `step` (a compensation). Compensations are not part of
    /// the forward flow: they may loop back without forming a reaction cycle.
    pub fn compensates(mut self, step: &str) -> Self {
        self.compensates = Some(step.to_owned());
        self
    }

    /// It ends the saga (or this branch of it): it needs no consumer.
    pub fn terminal(mut self) -> Self {
        self.terminal = true;
        self
    }

    /// It says the saga failed: steps before it must be compensated.
    pub fn failure(mut self) -> Self {
        self.failure = true;
        self
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The event type.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Whether the topic's family holds the type's schema.
    pub fn has_schema(&self) -> bool {
        self.has_schema
    }

    /// The causes.
    pub fn causes(&self) -> &[String] {
        &self.after
    }

    /// Whether it is a step that may need compensating.
    pub fn is_step(&self) -> bool {
        self.step
    }

    /// The step it compensates, if it is a compensation.
    pub fn compensated_step(&self) -> Option<&str> {
        self.compensates.as_deref()
    }

    /// Whether it is terminal.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Whether it is a failure.
    pub fn is_failure(&self) -> bool {
        self.failure
    }
}

/// One subscribed topic in a declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// The topic's name.
    pub topic: String,
    /// The event types its family carries.
    pub types: Vec<&'static str>,
    /// The state key of its inputs.
    pub key: KeyKind,
}

/// Everything a participant declares: its name, inputs, deadlines and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// The participant's name.
    pub name: String,
    /// The topics it consumes.
    pub consumes: Vec<Consumed>,
    /// Whether deadlines are one of its inputs.
    pub deadlines: bool,
    /// The events it emits.
    pub emits: Vec<Output>,
}

impl Declaration {
    /// The declaration of `participant`, from its registration and its declared outputs.
    pub fn of<P: Participant>(participant: &P) -> Self {
        let inputs = participant.inputs();
        Declaration {
            name: P::NAME.to_owned(),
            consumes: inputs.routes().iter().map(|r| Consumed { topic: r.topic().to_owned(), types: r.types().to_vec(), key: r.key().clone() }).collect(),
            deadlines: inputs.has_deadlines(),
            emits: participant.outputs(),
        }
    }

    /// Whether it consumes event type `type_name` (or deadlines, for [`DEADLINE`]).
    pub fn consumes_type(&self, type_name: &str) -> bool {
        (type_name == DEADLINE && self.deadlines) || self.consumes.iter().any(|c| c.types.contains(&type_name))
    }

    /// Whether it consumes `type_name` on `topic`.
    pub fn consumes_on(&self, topic: &str, type_name: &str) -> bool {
        self.consumes.iter().any(|c| c.topic == topic && c.types.contains(&type_name))
    }

    /// The topics its reactions read, each keyed by the state key: the topics consumed by
    /// their Kafka key, and the repartition topics of the others. They must be
    /// co-partitioned (same partition count, same partitioner) with each other and with the
    /// changelog, so one instance owns a state key's every input and its state.
    pub fn co_partitioned(&self) -> Vec<String> {
        self.consumes.iter().map(|c| self.repartition_topic(&c.topic).unwrap_or_else(|| c.topic.clone())).collect()
    }

    /// Its compacted changelog topic (key = state key, value = [`crate::changelog`] record):
    /// `<participant>.changelog`.
    pub fn changelog_topic(&self) -> String {
        format!("{}.changelog", self.name)
    }

    /// The topics that are its own, as declared (without a
    /// [`topic_prefix`](crate::engine::EngineSettings::topic_prefix)): its changelog, the
    /// topics it consumes and their repartition topics, and the topics of its declared
    /// outputs but [`NAMED_BY_INPUT`].
    ///
    /// A topic an input names ([`Emitted::exact_topic`](crate::emit::Emitted::exact_topic),
    /// an aggregate's `ce_replyto`) must be none of them: the engine and the test kit drop
    /// such an output. A reply written into the compacted changelog would make its
    /// partition impossible to restore; one written into an input or output topic would
    /// put a stranger's record into that stream.
    ///
    /// ```
    /// use herald_choreography::declaration::{Declaration, Output, NAMED_BY_INPUT};
    /// let d = Declaration { name: "orders".into(), consumes: vec![], deadlines: false, emits: vec![Output::untyped("shop.orders", "x.Placed", true), Output::untyped(NAMED_BY_INPUT, "x.Reply", true)] };
    /// assert_eq!(d.own_topics(), ["orders.changelog", "shop.orders"]);
    /// ```
    pub fn own_topics(&self) -> Vec<String> {
        let consumed = self.consumes.iter().flat_map(|c| std::iter::once(c.topic.clone()).chain(self.repartition_topic(&c.topic)));
        let emitted = self.emits.iter().map(|o| o.topic.clone()).filter(|t| t != NAMED_BY_INPUT);
        let mut own: Vec<String> = Vec::new();
        for topic in std::iter::once(self.changelog_topic()).chain(consumed).chain(emitted) {
            if !own.contains(&topic) {
                own.push(topic);
            }
        }
        own
    }

    /// The internal topic its inputs of `topic` go through when they must be repartitioned
    /// (their state key is not their Kafka key): `<participant>.<topic>.by-<key>`, with
    /// `_` in the key's name written `-`.
    pub fn repartition_topic(&self, topic: &str) -> Option<String> {
        let consumed = self.consumes.iter().find(|c| c.topic == topic)?;
        let key = match &consumed.key {
            KeyKind::Subject => return None,
            KeyKind::Correlation => "correlation",
            KeyKind::By(name) => name,
        };
        // Kafka refuses names that mix `.` and `_` (they collide in metric names).
        Some(format!("{}.{}.by-{}", self.name, topic, key.replace('_', "-")))
    }
}
