//! The participant: a decision over typed inputs; the runtime does the I/O.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::declaration::Output;
use crate::input::Inputs;
use crate::reaction::Reaction;

/// A choreography participant.
///
/// It subscribes to typed topics ([`Participant::inputs`]) and, for each input, decides
/// from its state for the input's key, the input, and the time: the new state, the events
/// to emit, deadlines to set or cancel, and whether its part is finished
/// ([`Participant::decide`]). `decide` must be deterministic: no clock but `now`, no
/// randomness, no I/O. The runtime may call it again for the same input after an aborted
/// transaction, and it must then decide the same.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use herald_choreography::{declaration::Output, Inputs, Participant, Reaction};
/// # herald_bus::family! { #[derive(Debug)] pub enum Ev { Ping(Ping), Pong(Pong) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Ping { id: String }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Pong { id: String }
/// # impl herald_bus::Event for Ping { const TYPE: &'static str = "x.Ping"; const SCHEMA: &'static str = r#"{"type":"record","name":"Ping","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
/// # impl herald_bus::Event for Pong { const TYPE: &'static str = "x.Pong"; const SCHEMA: &'static str = r#"{"type":"record","name":"Pong","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
/// const PINGS: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.pings");
///
/// /// Answers each ping once.
/// struct Ponger;
///
/// impl Participant for Ponger {
///     const NAME: &'static str = "ponger";
///     type Input = Ev;
///     type State = bool; // answered?
///
///     fn inputs(&self) -> Inputs<Ev> {
///         Inputs::by_subject().on(&PINGS, |e| e)
///     }
///
///     fn outputs(&self) -> Vec<Output> {
///         vec![Output::of::<Pong, _>(&PINGS).after(&["x.Ping"]).terminal()]
///     }
///
///     fn decide(&self, answered: &bool, input: Ev, _now: DateTime<Utc>) -> Reaction<bool> {
///         match input {
///             Ev::Ping(p) if !answered => Reaction::with_state(true).emit(&PINGS, Pong { id: p.id }).finish(),
///             _ => Reaction::keep(),
///         }
///     }
/// }
/// # let mut t = herald_choreography::testkit::Scenario::new(Ponger);
/// # t.when(&PINGS, Ping { id: "a".into() });
/// # assert_eq!(t.emitted().len(), 1);
/// ```
pub trait Participant: Send + Sync + 'static {
    /// Its name: the consumer group, the changelog and repartition topics, the `ce_source`
    /// and the seed of its event ids derive from it, so it must make valid topic names (use
    /// `a-z`, `0-9` and `-`; [`crate::declaration::check`] says when it does not). Never
    /// rename a running participant.
    const NAME: &'static str;

    /// The input type: usually an enum with one variant per subscribed family, and one
    /// for fired deadlines.
    type Input: Send + 'static;

    /// The state of one key. Stored in a compacted changelog as Avro
    /// ([`crate::changelog`]): derive `AvroSchema` and `serde` on it.
    type State: Default + Clone + std::fmt::Debug + Serialize + DeserializeOwned + apache_avro::AvroSchema + Send + Sync + 'static;

    /// The typed registration of its inputs.
    fn inputs(&self) -> Inputs<Self::Input>;

    /// The events it may emit, with their roles (see [`crate::declaration`]).
    fn outputs(&self) -> Vec<Output>;

    /// The state of a key seen for the first time: the default, unless overridden (for
    /// example stock seeded from a file).
    fn initial(&self, key: &str) -> Self::State {
        let _ = key;
        Self::State::default()
    }

    /// The decision: a plain, deterministic function of (state, input, now).
    fn decide(&self, state: &Self::State, input: Self::Input, now: DateTime<Utc>) -> Reaction<Self::State>;
}
