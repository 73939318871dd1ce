//! One partition-worker runtime for every consumer Herald runs: the bus's typed handlers,
//! the projector's store transactions, and (next) choreography's Kafka transactions.
//!
//! # Design
//! Kafka Streams drives every task from one `StreamThread` and only the processors differ;
//! tower has one `Service` shape and everything else is a `Layer`. Herald does the same:
//!
//! ```text
//!   poll loop (one per consumer) ── batches ──▶ partition worker (one task per partition)
//!     │ recv, copy once (Recycler)                 │ retry layer   (retry.rs)
//!     │ flow control (flow.rs)                     │ dead-letter layer (dead_letter.rs)
//!     │ rebalance hooks (context.rs)               │ Sink::deliver  ◀── what differs
//!     │ fatal errors (fatal.rs)                    │ progress (progress.rs) → offsets
//!     └ shutdown protocol (shutdown.rs)            └
//! ```
//!
//! The runtime owns what is the same for everyone:
//! - **Polling.** One rdkafka queue, read by one loop ([`poll`]) that never waits for a
//!   sink: it copies each record once into an [`OwnedRecord`](crate::consumer::OwnedRecord)
//!   (reusing buffers the workers give back), and hands each partition's worker its records
//!   as one batch per turn.
//! - **Flow control** ([`flow`]): queues are bounded in bytes; a partition over its share
//!   is paused in the client (the loop keeps polling) and resumed with hysteresis.
//! - **Assignment and revocation** ([`context`]): on revoke, the revoked partitions'
//!   workers stop after their current batch (up to `revoke_timeout`), their progress is
//!   stored and committed inside the rebalance; a *lost* assignment is never committed.
//!   Sinks hear of both ([`Sink::on_assigned`], [`Sink::on_revoked`] with `lost`), and may
//!   choose where an assigned partition starts ([`Assignment::start_at`]), for sinks that
//!   keep positions themselves.
//! - **Retry** ([`retry`]): a record that failed is delivered again alone, with backoff,
//!   up to the policy's attempts; transient unavailability waits without using attempts.
//! - **Dead letters** ([`dead_letter`]): what cannot be handled goes to `<topic>.dlq`,
//!   retrying only what can succeed; a dead letter that can never be written parks its
//!   partition (paused, the consumer unhealthy with the reason) instead of looping.
//! - **Fatal conditions** ([`fatal`]): authentication failures, fatal client errors and
//!   deleted topics end [`Runtime::run`] with an error.
//! - **Shutdown** ([`shutdown`]): stop intake, drain under a deadline, store and commit,
//!   flush the dead-letter producer, leave the group; each step under a deadline, so a
//!   broker that is gone cannot hold a shutdown for ever.
//!
//! What differs is a [`Sink`] (see [`sink`]): it opens one [`PartitionSink`] per
//! partition and receives that partition's records in offset order, in batches. It tells
//! the runtime what it finished through [`Progress`]; it says whether the runtime stores
//! offsets ([`Offsets::Stored`]: the bus's handlers, at least once) or the sink owns
//! them ([`Offsets::Mirrored`]: the projector's store transaction writes positions with
//! the view, and the runtime mirrors them to the group for lag tools; [`Offsets::Owned`]:
//! a Kafka transaction sends offsets with `send_offsets_to_transaction`).
//!
//! # Sinks today and next
//! | sink | offsets | on assignment | on revoke / lost | batches |
//! |---|---|---|---|---|
//! | bus handlers (`consumer::sink`) | `Stored` after each record | group's offsets | stored, committed / dropped | handled one by one |
//! | projector (herald-projector `runner::sink`) | `Mirrored` | positions read from the store, [`Assignment::start_at`] | ownership withdrawn (a late transaction fails its compare-and-set) | one store transaction per `max_batch` |
//! | choreography (issue 8, next) | `Owned` | state rebuilt for the partitions; fresh [`Membership::group_metadata`] per transaction | commit the open transaction / *abort* it when `lost` | appended to the process's open transaction; [`Delivery::Done`] once it committed |
//!
//! A choreography sink's partitions hand their reactions to one transactional producer
//! per process (a coordinator task of the sink) and wait for the commit that covers
//! them; the coordinator commits every N ms or M records with
//! `send_offsets_to_transaction(offsets, Membership::group_metadata())`, and is told of
//! lost partitions by [`Sink::on_revoked`] (`lost: true`) so it never commits them. Not
//! there yet: rewinding the inputs after an aborted transaction needs a seek on
//! [`Membership`] (and the workers' queues of those partitions dropped); add it with the
//! first transactional sink.
//!
//! # Threads
//! Rebalance hooks run inside librdkafka's poll, on the thread that polls, which is a
//! tokio worker. Where a hook must wait (for workers to stop, for a sink to read its
//! positions) it leaves the worker with `tokio::task::block_in_place`, so other tasks keep
//! running; a current-thread runtime cannot do that, and [`Runtime::new`] refuses it with
//! [`ConsumerError::CurrentThreadRuntime`] instead of stalling every rebalance.
//!
//! # Memory
//! Every queue is bounded: the client's prefetch (`queued.max.messages.kbytes`), the
//! partition queues (by bytes, through pausing), the buffers kept for reuse (by count and
//! size), the dead-letter producer (its in-flight limit).

mod closer;
pub mod context;
pub mod dead_letter;
mod error;
pub mod fatal;
pub mod flow;
mod health;
pub mod poll;
pub mod observer;
pub mod progress;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod sink;
#[cfg(test)]
mod tests;
pub mod worker;

pub use context::Assignment;
pub use error::ConsumerError;
pub use health::ConsumerHealth;
pub use observer::{Observer, PartitionLoad};
pub use poll::Runtime;
pub use settings::{Settings, CONSUMER_DEFAULTS};
pub use progress::Progress;
pub use retry::RetryPolicy;
/// Fails with [`ConsumerError::CurrentThreadRuntime`] unless called on tokio's
/// multi-threaded runtime (see [Threads](self#threads)). Builders call it first.
pub fn require_multi_thread() -> Result<(), ConsumerError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => Ok(()),
        _ => Err(ConsumerError::CurrentThreadRuntime),
    }
}

pub use sink::{Delivery, FailureClass, Membership, Offsets, PartitionSink, Sink};
