//! The projector: a consumer-group member that folds a topic into a view. It is the
//! [consumer runtime](herald_bus::runtime) with a store transaction as its sink.
//!
//! # How a record flows
//! 1. The runtime polls, bounds the buffered bytes (pausing with hysteresis), and hands
//!    each partition's worker its records in batches ([`herald_bus::runtime`]).
//! 2. The partition's sink (`sink`) decodes the batch and sends it to the store thread
//!    as transactions of at most `max_batch` records: each moves the partition's
//!    position by compare-and-set and applies the events.
//! 3. After the commit the runtime mirrors the positions to the group's committed
//!    offsets (for lag tools only; they are never read back: on assignment the sink
//!    starts each partition at its stored position).
//!
//! # Failures
//! - A projection error on a record rolls the batch back; the runtime's retry layer
//!   delivers the records before it again, then the record itself, with backoff.
//! - A record that cannot be decoded, a permanent error, or running out of retries makes
//!   a poison record. By [`OnPoison::DeadLetter`] (default) it is written to the
//!   dead-letter topic, and only once the broker acknowledged it does a transaction move
//!   the position past it (recording the reason in `herald_dead_letters`). By
//!   [`OnPoison::Pause`] the partition stops there (circuit open) until an operator calls
//!   [`Control::retry`] or [`Control::skip`] (`letters`). A dead letter that can never
//!   be written parks the partition (state `parked`, unhealthy) until an operator acts.
//! - A batch whose compare-and-set fails (another member moved the position) is rolled
//!   back; the partition skips what the other member applied and goes on from there.
//!
//! # Layout
//! [`policy`]: [`OnPoison`], [`StopAt`], [`Stopped`]. [`control`]: [`Control`].
//! [`builder`]: [`ProjectorBuilder`]. [`projector`]: [`Projector`] and its watch loop.
//! `sink`: the store-transaction sink. `letters`: the poison policy. `board`: live
//! per-partition state for `/status` and the stop point.

pub mod builder;
mod board;
pub mod control;
mod letters;
pub mod policy;
pub mod projector;
mod sink;

pub use builder::ProjectorBuilder;
pub use control::Control;
pub use policy::{OnPoison, StopAt, Stopped};
pub use projector::Projector;

/// Consumer properties the projector sets. Offsets are never stored automatically;
/// `enable.auto.commit` only mirrors the positions the projector stores after each
/// commit, for lag tools.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "1000"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("isolation.level", "read_committed"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.wait.max.ms", "100"),
    // librdkafka waits this long to fetch again once its prefetch queue was full; its 1 s
    // default stalls a projector catching up on a backlog (see herald-bus's defaults).
    ("fetch.queue.backoff.ms", "10"),
    ("enable.partition.eof", "true"),
];
