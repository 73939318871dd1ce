//! # herald-gateway: HTTP in, Avro events out
//!
//! An HTTP front door for Herald: each route of a `gateway.toml` maps a method and path
//! to an event type on a topic. The JSON body is checked against the event's Avro schema
//! (the `schemas/` folder, the single source of truth; the same mapping as `herald
//! publish`), server-side fields are filled in, and the event is published with Herald's
//! [`Publisher`](herald_bus::Publisher). The answer is `202` with
//! `{"id", "topic", "partition", "offset"}` once the broker acknowledged the event.
//!
//! ```text
//! POST /orders {"customer_id":"c-1","total_cents":1200,"currency":"EUR","lines":[...]}
//! → 202 {"id":"0193…","topic":"shop.orders","partition":3,"offset":41}
//! ```
//!
//! The configuration format is documented in [`config`]; `crates/gateway/shop.toml` is
//! the shop's. Run `herald-gateway --config crates/gateway/shop.toml`.
//!
//! # Layout
//! - [`config`]: `gateway.toml` as written. [`route`]: a route checked against its schema.
//! - [`validate`]: body → fills → key → Avro datum, or a `400` naming the field.
//! - [`problem`]: every error as RFC 9457 problem JSON.
//! - [`auth`]: who sent the request (`401`), per-route scopes (`403`).
//! - [`limits`]: rate limits per principal and route (`429`).
//! - [`idempotency`]: `Idempotency-Key` replays (`422` for a different request), kept on a
//!   compacted topic so they survive restarts.
//! - [`sender`]: publish within the deadline; [`breaker`]: fail fast while Kafka is away.
//! - [`query`]: `GET` routes answered by a registered service's instances (a projector
//!   view), with balancing, health checks, outlier ejection and a breaker per backend.
//! - [`handler`]: one event route's request pipeline. [`server`]: [`Gateway`], the router,
//!   `/health` and `/metrics`. [`metrics`]: the series recorded. [`openapi`]:
//!   `/openapi.json` generated from the routes.
//! - [`dashboard`]: the web page at `/ui` (admin scope): topics and their rates, consumer
//!   groups and lag, services and their health, sagas and their timelines, dead letters
//!   with inspection and replay.
//!
//! # Guarantees
//! - **Durable before it answers.** `202` only after the broker acknowledged the event with
//!   `acks=all` (idempotent producer). Every other outcome is an error status; a `503`
//!   means nothing was acknowledged.
//! - **Bounded waiting.** No request waits for the broker longer than `deadline_ms`, nor
//!   for its body (then `408`); after
//!   `failures` consecutive failed sends the breaker answers `503` at once, with
//!   `Retry-After`, and lets one probe through after `open_ms`; a successful probe closes
//!   it, so the gateway recovers by itself.
//! - **Nothing invalid is published.** A body that is not JSON, does not fit the schema,
//!   is too large, or comes without the right credentials never becomes an event.
//! - **Trace continued.** A valid `traceparent` is continued into the event's headers (a
//!   child span of the caller's); otherwise the event starts a new trace.
//! - **Idempotent retries.** A request repeated with the same `Idempotency-Key` gets the
//!   same event id and the same `202`, without a second event; what holds across
//!   restarts and instances is stated precisely in [`idempotency`].
//! - **No secrets in logs.** Credentials are never logged nor echoed in responses.

pub mod auth;
pub mod breaker;
pub mod config;
pub mod dashboard;
pub mod handler;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod query;
pub mod reachability;
pub mod route;
pub mod sender;
pub mod server;
pub mod validate;

pub use config::Config;
pub use handler::Accepted;
pub use server::{Gateway, GatewayError, Options};
