//! `Idempotency-Key`: a repeated key (per principal) gets the same event id and the same
//! response, never a second event; the same key with a different request gets `422`.
//!
//! # Design
//! - The event id of a request with a key is derived from principal and key ([`Scoped`]):
//!   the same on every instance, before and after a restart.
//! - A fresh request publishes its event; once the broker acknowledged it, the gateway
//!   writes an idempotency record (the request's fingerprint and its `202`) to a compacted
//!   topic (`[idempotency] topic`, default `herald.gateway.idempotency`, with the topic
//!   prefix; records older than `ttl_hours` are ignored and deleted), then answers `202`.
//! - At start, the gateway reads that topic to its end before serving, then follows it:
//!   records of other instances reach it within the consumer's fetch latency.
//! - A request that fails (`400`, `503`, ...) records nothing: the key can be used again.
//!   A second request with a key while the first is in progress gets `409`.
//!
//! # What holds, and what does not
//! - **One instance, also across restarts**: a replay with the same key and request gets
//!   the stored `202` and publishes nothing; with a different request, `422`.
//! - **Several instances**: once an instance has read another's record (normally within
//!   milliseconds), the same holds there. Two requests with the same key sent to two
//!   instances at the same moment, before either record is read, can both publish: then
//!   two events carry **the same event id** (`ce_id`), which consumers dedupe on.
//! - **A crash between the event's acknowledgement and the record's**: the retry publishes
//!   again, with the same event id. The same happens when the record cannot be written
//!   (the `202` is still sent, since the event is durable; this instance replays from
//!   memory).
//! - **A `503` after the deadline** may hide an event that was written after all; a retry
//!   with the same key then publishes it again with the same event id.
//!
//! So within a key's TTL: never two events with different ids, and never a second event
//! except in the windows above, each of which repeats the same event id.

mod key;
mod log;
mod store;

pub use key::{fingerprint, Scoped, MAX_KEY_LEN};
pub use log::LogError;
pub use store::{Begin, InProgress, Store, Stored};

use std::sync::Arc;
use std::time::Duration;

use herald_bus::{KafkaConfig, Publisher};
use serde::Deserialize;

/// The header.
pub const HEADER: &str = "idempotency-key";

/// `[idempotency]` in `gateway.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// The records' topic, before the topic prefix (default `herald.gateway.idempotency`).
    pub topic: String,
    /// How long a key is remembered, in hours (default 24).
    pub ttl_hours: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig { topic: "herald.gateway.idempotency".to_owned(), ttl_hours: 24 }
    }
}

/// The store and its topic.
#[derive(Debug, Clone)]
pub struct Idempotency {
    store: Arc<Store>,
    topic: String,
    publisher: Publisher,
    deadline: Duration,
}

impl Idempotency {
    /// Creates the topic if missing, reads it to its end, and follows it.
    pub async fn start(kafka: &KafkaConfig, topic: String, ttl: Duration, publisher: Publisher, deadline: Duration) -> Result<Self, LogError> {
        log::create(kafka, &topic, ttl).await?;
        let store = Store::new(ttl.as_millis() as i64);
        let loaded = log::load_and_follow(kafka, &topic, &store, Duration::from_secs(30)).await?;
        tracing::info!(topic = %topic, records = loaded, "idempotency records loaded");
        Ok(Idempotency { store, topic, publisher, deadline })
    }

    /// Records known (finished or in progress).
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when no record is known.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Decides about a request (see [`Store::begin`]).
    pub fn begin(&self, key: &Scoped, fingerprint: &str, now_ms: i64) -> Begin {
        self.store.begin(key, fingerprint, now_ms)
    }

    /// Records a fresh request's `202`: in memory at once, then on the topic.
    pub async fn finish(&self, progress: InProgress, accepted: crate::handler::Accepted, now_ms: i64) {
        let hash = progress.hash().to_owned();
        let stored = progress.finish(accepted, now_ms);
        if let Err(e) = log::write(&self.publisher, &self.topic, &hash, &stored, self.deadline).await {
            tracing::warn!(error = %e, "idempotency record not written; a retry after a restart or on another instance publishes again (same event id)");
        }
    }
}
