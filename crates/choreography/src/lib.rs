//! # herald-choreography: services that react, compensate and keep deadlines
//!
//! A saga here has no orchestrator: each **participant** reacts to events on typed topics
//! and emits the next step or a compensating event. A participant is a *decision*, a plain
//! deterministic function of (its state, the input, now) that returns a [`Reaction`]: the
//! new state, the events to emit (typed, to typed topics), deadlines to set or cancel, and
//! whether its part is finished. The runtime does the I/O.
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use herald_choreography::{declaration::{Output, DEADLINE}, testkit::Scenario, Deadline, Fired, Inputs, Participant, Reaction};
//! # herald_bus::family! { #[derive(Debug)] pub enum OrderEvent { Placed(Placed), Cancelled(Cancelled) } }
//! # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub struct Placed { order_id: String }
//! # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub struct Cancelled { order_id: String }
//! # impl herald_bus::Event for Placed { const TYPE: &'static str = "x.Placed"; const SCHEMA: &'static str = r#"{"type":"record","name":"Placed","namespace":"x","fields":[{"name":"order_id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.order_id } }
//! # impl herald_bus::Event for Cancelled { const TYPE: &'static str = "x.Cancelled"; const SCHEMA: &'static str = r#"{"type":"record","name":"Cancelled","namespace":"x","fields":[{"name":"order_id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.order_id } }
//! const ORDERS: herald_bus::Topic<OrderEvent> = herald_bus::Topic::new("x.orders");
//!
//! enum Input { Order(OrderEvent), Timeout(Fired) }
//!
//! /// Cancels every order after a minute.
//! struct Expiry;
//!
//! impl Participant for Expiry {
//!     const NAME: &'static str = "expiry";
//!     type Input = Input;
//!     type State = bool; // cancelled?
//!
//!     fn inputs(&self) -> Inputs<Input> {
//!         Inputs::by_subject().on(&ORDERS, Input::Order).on_deadline(Input::Timeout)
//!     }
//!
//!     fn outputs(&self) -> Vec<Output> {
//!         vec![Output::of::<Cancelled, _>(&ORDERS).after(&[DEADLINE]).failure().terminal()]
//!     }
//!
//!     fn decide(&self, cancelled: &bool, input: Input, now: DateTime<Utc>) -> Reaction<bool> {
//!         match input {
//!             Input::Order(OrderEvent::Placed(p)) => {
//!                 Reaction::keep().set_deadline(Deadline::after("expire", now, std::time::Duration::from_secs(60)).with_payload(p.order_id))
//!             }
//!             Input::Order(OrderEvent::Cancelled(_)) => Reaction::keep(),
//!             Input::Timeout(fired) if !cancelled => Reaction::with_state(true).emit(&ORDERS, Cancelled { order_id: fired.payload }).finish(),
//!             Input::Timeout(_) => Reaction::keep(),
//!         }
//!     }
//! }
//!
//! let mut t = Scenario::new(Expiry);
//! t.given(&ORDERS, Placed { order_id: "o-1".into() });
//! t.advance(std::time::Duration::from_secs(60)).then_emitted(&ORDERS, &Cancelled { order_id: "o-1".into() });
//! ```
//!
//! # Layout
//! - [`participant`]: the [`Participant`] trait: name, inputs, declared outputs, initial
//!   state, `decide`.
//! - [`input`]: [`Inputs`], the typed registration of topics (`.on(&ORDERS, Input::Order)`)
//!   and deadlines; [`StateKey`] and [`KeyKind`], which state an input belongs to and
//!   whether it must be repartitioned.
//! - [`reaction`]: [`Reaction`], what a decision returns. [`emit`]: [`emit::Emitted`], an
//!   emitted event typed when written, erased inside.
//! - [`deadline`]: [`Deadline`], [`Fired`], and a pending deadline as stored.
//! - [`slot`]: [`slot::Slot`], the stored unit of one state key (state, pending deadlines,
//!   finished). [`changelog`]: its Avro encoding for a compacted changelog topic.
//! - [`reactor`]: one reaction step (decide, apply, give events their metadata), shared by
//!   the test kit and the runtime. [`ids`]: deterministic event ids, correlation, causation.
//! - [`join`]: [`join::Join`], all of / any of / n of m with a deadline.
//!   [`compensation`]: [`compensation::Compensation`], "on failure of a later step, undo mine".
//! - [`declaration`]: what each participant consumes and emits; [`declaration::check`]
//!   (the static saga check) and [`declaration::diagram`] (Mermaid).
//! - [`engine`]: the exactly-once Kafka runtime of one participant.
//! - [`testkit`]: given / when / then with a manual clock ([`testkit::Scenario`]), and
//!   several participants on an in-memory bus ([`testkit::World`]).
//!
//! # Guarantees
//! The decisions, state, deadlines and checks are broker-free; [`engine`] runs a
//! participant against Kafka.
//!
//! **In the core:**
//! - **Typed in, typed out.** An input registration maps a topic's family into the
//!   participant's input type; emitting an event that is not in the topic's family does
//!   not compile.
//! - **Deterministic reactions.** The events of a reaction get name-based ids derived
//!   from the participant's name, the input's `ce_id` and their index
//!   ([`ids::event_id`]; or an id the participant derives itself,
//!   [`emit::Emitted::with_id`], as aggregates do from their version), the input's correlation id, the input's id as causation id, and
//!   a span of the input's trace (`traceparent`) derived from their id. The same input
//!   decided again from the same state at the same `now` emits identical events: ids,
//!   payloads and headers.
//! - **Deadlines** are part of the state of their key ([`slot::Slot`]): set, replaced or
//!   cancelled by name, taken exactly once when they fire, dropped when the part finishes.
//!   A fired deadline is an input with a deterministic id too ([`ids::deadline_id`]).
//! - **State is encodable** for a compacted changelog, schema checked
//!   ([`changelog::check_state`]).
//! - **The saga is checkable** before it runs ([`declaration::check`]), and the test kit
//!   refuses events a participant emits without declaring them.
//!
//! **With the [`engine`]** (a sink on herald-bus's consumer runtime): the reactions'
//! events, the changelog records of their keys and the inputs' offsets commit in one
//! Kafka transaction (read_committed inputs, KIP-447), so a crash shows all of a
//! reaction's effects or none; state is rebuilt from the changelog before a partition
//! reacts; deadlines due while a process was down fire when their partition is next
//! owned. Inputs whose [`KeyKind::needs_repartition`] (keyed by something else than the
//! state key) pass through the group's `<group>.repartition` topic first.

pub mod changelog;
pub mod compensation;
pub mod deadline;
pub mod declaration;
pub mod emit;
pub mod engine;
pub mod ids;
pub mod input;
pub mod join;
pub mod participant;
pub mod reaction;
pub mod reactor;
pub mod slot;
pub mod testkit;

pub use deadline::{Deadline, Fired};
pub use input::{Inputs, KeyKind, StateKey};
pub use participant::Participant;
pub use reaction::Reaction;

#[cfg(test)]
mod tests;
