//! # herald-tracker: see every saga, and whether it kept its guarantee
//!
//! A choreographed saga has no orchestrator that knows where it stands. The tracker is a
//! projection (on herald-projector) of the saga's public topics keyed by correlation id:
//! it records every event of each saga (type, source, time, topic/partition/offset, event
//! id, causation id) and judges the saga from its participants' declarations, the same
//! ones `herald saga check` checks: which event types are steps, which compensate which
//! step, which are failures and which end the saga.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_tracker::{query, shop::Shop, Runner};
//! let store = herald_projector::store::open("sqlite:sagas.db")?;
//! let tracker = Runner::<Shop>::new(herald_bus::KafkaConfig::new("127.0.0.1:9092"), "shop-saga-tracker", store.clone()).build().await?;
//! tokio::spawn(tracker.run(std::future::pending()));
//! // elsewhere (or `herald saga list --stuck`):
//! let mut conn = store.connect()?;
//! let stuck = query::list(&mut *conn, &query::Filter { stuck: true, ..Default::default() }, chrono::Utc::now())?;
//! # Ok(()) }
//! ```
//!
//! # States
//! - `running`: in progress and moving (no outcome yet, or an outcome whose compensations
//!   are still on their way).
//! - `completed`: a success outcome (a terminal event that is neither a failure nor a
//!   compensation, `OrderConfirmed`), every step the success needs seen (from the declared
//!   causes: a confirmation needs the charge, the charge the reservation), nothing
//!   compensated.
//! - `compensated`: a failure outcome (`OrderCancelled`) and every step that ran
//!   compensated (`StockReserved` by `StockReleased`, `PaymentCharged` by
//!   `PaymentRefunded`).
//! - `failed`: the **saga guarantee** (every step completed, or every step that ran
//!   compensated) is violated: two outcomes; a completed saga with a compensated step; or
//!   an outcome after which a compensation (or a required step) did not come within the
//!   stuck threshold of the last event (a compensation that failed; such sagas are also
//!   flagged `stuck`). The reason says which. Failures are counted in
//!   `herald_saga_guarantee_violations` and logged, never hidden.
//! - `stuck`: no outcome and no progress for longer than the threshold (default 5 min).
//!
//! # Layout
//! - [`model`]: [`SagaModel`], the roles of event types from the declarations.
//! - [`event`]: [`TrackedEvent`], one recorded event. [`verdict`]: what a saga's events
//!   say, in any order ([`verdict::judge`]). [`state`]: the state at a time
//!   ([`state::assess`]), durations.
//! - [`saga`]: [`TrackedSaga`] (what a saga provides) and [`Observed`] (events whose
//!   payload the tracker never decodes). [`shop`]: the reference saga; [`script`]: publish
//!   shop sagas by hand (demos, tests).
//! - [`projection`]: [`Tracker`], the projection. [`query`]: list and show from the store.
//! - [`http`]: `GET /sagas`, `GET /sagas/{id}`. [`run`]: [`Runner`], one projector per
//!   topic, gauges, health.
//!
//! # Guarantees
//! - **Exactly once in effect**, from the projector: an event and its saga's new verdict
//!   commit with the position; an event seen twice (replay, duplicate) is recorded once.
//! - **Order-free.** Topics are read by separate projectors, so a saga's events arrive in
//!   any order; the verdict is recomputed from all its recorded events each time, with the
//!   saga's row locked first, so it is the same whatever the order. Tracker transactions
//!   are serialized (SQLite's write lock; on PostgreSQL an advisory lock per tracked saga),
//!   so projectors whose batches touch the same sagas in different orders never deadlock.
//! - **Generic.** The tracker reads headers and positions only (payloads are not decoded),
//!   and the roles come from the declarations: any saga whose events carry Herald's
//!   correlation headers can be tracked by implementing [`TrackedSaga`].
//!
//! Limits: one tracked saga per store (the tables are `sagas` and `saga_events`); time in
//! states is event time (`ce_time`), so a replay of old events shows unfinished sagas as
//! stuck at once, which they are. A record whose writer schema is not in
//! [`TrackedSaga::schemas`] cannot be recognised: like any projector's poison record it
//! goes to `<topic>.dlq` (with the tracker's group in its headers) and the tracker moves
//! on. Each topic is read in its own consumer group, `GROUP.TOPIC`. Steps on internal
//! topics (per-SKU reservations) are not seen: the saga is judged on its public topics.

pub mod event;
pub mod http;
pub mod model;
pub mod projection;
pub mod query;
pub mod run;
pub mod saga;
pub mod script;
pub mod shop;
pub mod state;
pub mod verdict;

pub use event::TrackedEvent;
pub use model::{Role, SagaModel};
pub use projection::Tracker;
pub use run::{Runner, Running, TrackerError};
pub use saga::{Observed, TrackedSaga};
pub use state::State;

#[cfg(test)]
mod tests;
