//! # herald-projector: views from event topics, with the position stored in the view
//!
//! A projector folds the events of one topic into query-ready tables (the read side of
//! CQRS). You write a [`Projection`]: typed handlers, one `match` over the event family,
//! each applying an event inside a store transaction. The projector runs it as a member
//! of a consumer group and stores, **in the same transaction**, how far it got.
//!
//! ```no_run
//! # use herald_projector::{Projection, ProjectionError, Tx};
//! # herald_bus::family! { #[derive(Debug)] pub enum Demo { A(A) } }
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct A { id: String }
//! # impl herald_bus::Event for A { const TYPE: &'static str = "A"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
//! # struct Counts;
//! # impl Projection<Demo> for Counts {
//! #     const NAME: &'static str = "counts";
//! #     fn migrate(&self, _: &mut dyn Tx) -> Result<(), ProjectionError> { Ok(()) }
//! #     fn apply(&self, _: &mut dyn Tx, _: &herald_bus::Envelope<Demo>) -> Result<(), ProjectionError> { Ok(()) }
//! # }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_bus::{KafkaConfig, Topic};
//! use herald_projector::{store, Projector};
//! const DEMO: Topic<Demo> = Topic::new("demo.events");
//!
//! let store = store::open("sqlite:views.db")?;
//! let projector = Projector::builder(KafkaConfig::new("127.0.0.1:9092"), "counts", &DEMO, Counts, store)
//!     .build()
//!     .await?;
//! projector.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Batches
//! The projector applies events in transactions of up to `max_batch` events (one
//! partition's, or several partitions' merged when they wait together). A projection
//! that only implements [`Projection::apply`] runs its statements once per event; one that
//! also implements [`Projection::apply_batch`] sees the whole transaction's events at once,
//! folds them in memory (several events of one key become one row) and writes each table
//! in one statement with [`Tx::execute_rows`] (PostgreSQL: `UNNEST` arrays, one round trip;
//! SQLite: one prepared statement per row). The reference `order_totals` example does; see
//! `BENCHMARKS.md` for what it gains.
//!
//! # Layout
//! - [`projection`]: the [`Projection`] trait users implement.
//! - [`store`]: the [`Store`]/[`Connection`]/[`Tx`] abstraction; [`store::sqlite`]
//!   (feature `sqlite`, default) and `store::postgres` (feature `postgres`).
//! - [`position`]: the positions table and its compare-and-set, dead letters, view versions.
//! - [`runner`]: [`Projector`] and its builder: herald-bus's consumer runtime with a store
//!   transaction as its sink (positions read on assignment, batches applied with their
//!   positions), the poison policy, operator control, the stop points.
//! - `worker`: the store thread that runs transactions. `batch`: what passes to it.
//! - [`views`]: view versions and the atomic swap. [`rebuild`]: build a new version from the
//!   beginning of the log (or up to a time or offsets) and swap it in.
//! - [`status`]: per-partition positions and lag; [`http`]: `/status` and operator routes.
//! - `crash` (feature `crash-points`, enabled by the tests only): crash points for fault
//!   tests. [`error`]: error types.
//!
//! # Guarantees
//! - **Exactly once in effect.** A batch's view changes and its positions commit in one
//!   database transaction. After a crash, the projector resumes from the stored positions
//!   (read from the database on every assignment, never from the group's committed
//!   offsets), so no event is lost and none is applied twice.
//! - **Fenced.** The position update is a compare-and-set from the offset the batch started
//!   at. A member that lost its partitions cannot commit them: its transaction finds the
//!   position moved and rolls back. In-process, a revocation also withdraws ownership
//!   before the next owner starts, and a batch checks ownership before it commits.
//! - **Never skips silently.** A failing event is retried with backoff; a poison event
//!   (undecodable, permanent error, out of retries) is written to the dead-letter topic
//!   and acknowledged *before* the transaction that moves past it (which also records the
//!   reason in `herald_dead_letters`), or, by policy, stops its partition until an operator
//!   acts. A crash between the two can dead-letter a record twice, never lose it.
//!   Records deleted from the log (retention, `kafka-delete-records`) before they were
//!   applied cannot be applied; that is said on `/status` and `/health`, in the log, and
//!   in `herald_projector_deleted_unapplied_total`.
//! - **Ordered per partition.** A partition's events are applied in offset order.
//! - **Never blocks the poll loop.** Transactions run on their own thread; the loop keeps
//!   polling, pauses partitions whose buffer is full and resumes them at half.
//! - **Bounded memory**: the records queued ahead of the store are bounded in bytes (see
//!   [`ProjectorBuilder::max_buffered`]), plus the client's 16 MiB prefetch and the batch
//!   being decoded and applied (at most `max_batch` events per partition).
//! - **Orderly shutdown** on a future: finish the batch in flight, mirror positions to the
//!   group (for lag tools only), flush the dead-letter producer, leave the group.
//! - **Rebuilds never show a partial view.** A new version is built in its own tables and
//!   swapped in by one transaction that re-points the database views; the previous version
//!   is kept for rollback. A live projector notices the swap (at its next batch, or within
//!   a second when idle) and returns [`Stopped::Superseded`]; built again, it continues the
//!   new version from that version's own positions.
//!
//! What it does not promise: the dead-letter topic is at least once (a crash between the
//! acknowledged dead letter and the commit that moves past it writes it again), and the
//! group's committed offsets lag the stored positions by up to `auto.commit.interval.ms`
//! (they are never read back).

#[cfg(feature = "app")]
pub mod app;
mod batch;
#[cfg(feature = "crash-points")]
pub mod crash;
pub mod error;
pub mod http;
pub mod position;
pub mod projection;
pub mod rebuild;
pub mod runner;
pub mod status;
pub mod store;
pub mod views;
mod worker;

pub use error::{BatchError, ProjectionError, ProjectorError};
pub use projection::Projection;
pub use runner::{Control, OnPoison, Projector, ProjectorBuilder, StopAt, Stopped};
pub use status::{Status, StatusHandle};
pub use store::{Column, Connection, Store, StoreError, Transaction, Tx, Value};
