//! Given / when / then for participants, without a broker.
//!
//! [`Scenario`] runs one participant: given events, when an event (or
//! [`Scenario::advance`] on its manual clock), then these events were emitted, this is the
//! state, these deadlines are pending. [`World`] runs several participants together,
//! delivering each emitted event to every participant that consumes its topic, with
//! participants that can be paused (down) and resumed, to play races.
//!
//! Inputs travel as they will on Kafka: each event is encoded to its Avro datum with its
//! topic family's schema and decoded by the participant's route, so a schema that does not
//! fit its type fails here. Every emitted event must be declared in
//! [`Participant::outputs`](crate::Participant::outputs), or the step panics.

mod raw;
mod scenario;
mod world;

pub use raw::Raw;
pub use scenario::Scenario;
pub use world::World;

use chrono::{DateTime, Utc};

/// The time a test starts at: 2030-01-01T00:00:00Z (fixed, so tests are repeatable).
pub fn start_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_893_456_000, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}
