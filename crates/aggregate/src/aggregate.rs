//! The [`Aggregate`] trait: `decide` and `evolve`, typed commands and events.

use std::fmt;

use apache_avro::AvroSchema;
use herald_bus::{EventFamily, Topic};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The reason of a rejection for an `expected_version` that is not the aggregate's version.
pub const CONFLICT: &str = "conflict";

/// Why a command was refused: a short, stable `reason` (kebab-case, what clients match on,
/// for example `insufficient-funds`) and a message for people.
///
/// ```
/// let r = herald_aggregate::Rejection::new("insufficient-funds", "balance 500 is less than 700");
/// assert_eq!(r.to_string(), "insufficient-funds: balance 500 is less than 700");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The stable reason.
    pub reason: String,
    /// The explanation.
    pub message: String,
}

impl Rejection {
    /// A rejection with `reason` and `message`.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection { reason: reason.into(), message: message.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Rejection {}

/// An aggregate: commands decided against its current state, one at a time per aggregate
/// id, into events that become its state.
///
/// Both functions are plain and deterministic (no clock, no randomness, no I/O): the
/// runtime may call `decide` again for the same command after an aborted transaction and
/// must get the same events. Every event that `decide` returns must belong to the
/// command's aggregate (its `aggregate_id` is the command's): the runtime refuses the
/// command otherwise (reason `invalid-decision`), since the events would land on another
/// aggregate's stream.
///
/// The event family must serialize each member as the member itself: derive `Serialize`
/// on it with `#[serde(untagged)]` (see the example in the crate docs).
pub trait Aggregate: Send + Sync + 'static {
    /// Its name: the consumer group, the state (changelog) topic, the transactional ids,
    /// the `ce_source` and the seed of event ids derive from it (use `a-z`, `0-9`, `-`).
    /// Never rename a running aggregate.
    const NAME: &'static str;

    /// The command family (one variant per command type), read from [`Aggregate::COMMANDS`].
    type Command: EventFamily + fmt::Debug;

    /// The event family, written to [`Aggregate::EVENTS`].
    type Event: EventFamily + Serialize + Clone + fmt::Debug;

    /// The state of one aggregate; `Default` is the state before its first event. Stored
    /// in the engine's compacted changelog as Avro: derive `AvroSchema` and serde.
    type State: Default + Clone + fmt::Debug + Serialize + DeserializeOwned + AvroSchema + Send + Sync + 'static;

    /// The command topic, keyed by aggregate id.
    const COMMANDS: Topic<Self::Command>;

    /// The event topic (same key, same partition count as the commands).
    const EVENTS: Topic<Self::Event>;

    /// How many recent commands each aggregate remembers with their replies, so a command
    /// delivered or sent again gets the same reply and is not decided twice (default 64).
    ///
    /// The answers are stored with the state (about 18 bytes each, written in every
    /// transaction that changes the aggregate), so the cost per command grows with this
    /// number: at 64, a long-lived aggregate costs the engine about a third more CPU per
    /// command than at 1, and the whole machine (the broker writing the bigger records)
    /// almost half more (BENCHMARKS.md, "Steady state"). Keep it to the number
    /// of commands an aggregate may see while a client still retries one.
    const REMEMBERED: usize = 64;

    /// The decision: the events `command` causes from `state`, or why it is refused.
    fn decide(&self, state: &Self::State, command: Self::Command) -> Result<Vec<Self::Event>, Rejection>;

    /// The state after `event`.
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State;
}
