//! `Idempotency-Key`: a repeated key (per principal) gets the same event id and the same
//! response, never a second event; the same key with a different request gets `422`.
//!
//! # Design
//! - The event id of a request with a key is derived from principal, key and the
//!   request's fingerprint ([`Scoped::event_id`]): the same on every instance, before and
//!   after a restart.
//! - The records live on a compacted topic (`[idempotency] topic`, default
//!   `herald.gateway.idempotency`, with the topic prefix; records older than `ttl_hours`
//!   are ignored and deleted), keyed by the key's hash (claims and releases by
//!   `HASH.claim`, on the hash's partition, so compaction never replaces a key's `202` with
//!   a later claim: `log::record`). At start the gateway reads it to
//!   its end before serving, then follows it.
//! - A fresh request (its key unknown here) first **claims** the key: it writes a claim to
//!   the topic and waits until its reader has read past it. The first live claim in the
//!   partition's order owns the key; every instance reads the same order, so they agree
//!   without asking each other. The owner publishes its event, then writes the `202` as
//!   the key's record and answers. A request whose claim came second gets `409` (or the
//!   owner's `202` if the owner finished meanwhile, `422` if with another request).
//! - A request that fails (`400`, `503`, ...) records no `202`: it withdraws its claim
//!   (a release record), and the key can be used again. A second request with the key
//!   while the first is in progress gets `409`, on this instance or another.
//!
//! # What holds, and what does not
//! - **Within the key's TTL, a repeated key publishes no second event**, on one instance,
//!   after a restart, and across instances, also when two instances get the key at the
//!   same moment: one claim wins, the other request gets `409` and its retry the stored
//!   `202`.
//! - **Two windows remain**, each of which can only repeat the same event id (`ce_id`),
//!   which consumers dedupe on, never add an event with another: a gateway that crashes
//!   after its event was acknowledged and before its `202` record was written (the claim
//!   expires after twice the deadline plus 10 s, then a retry publishes again); and a
//!   `503` at the deadline for an event that was written after all (its claim is released,
//!   so a retry publishes it again). Closing them takes the event and the record in one
//!   Kafka transaction, which the gateway does not use (a transaction per request would
//!   cost its throughput, and read-uncommitted consumers would still see aborted events).
//! - The claim costs a request with a key one more acknowledged write and the reader's
//!   latency (a few milliseconds on a local broker); requests without a key pay nothing.

mod key;
mod log;
mod store;

pub use key::{fingerprint, Scoped, MAX_KEY_LEN};
pub use log::LogError;
pub use store::{Begin, Claim, Claimed, InProgress, LogRecord, Store, Stored};

use std::sync::Arc;
use std::time::Duration;

use herald_bus::{KafkaConfig, Publisher};
use serde::Deserialize;

use crate::problem::Problem;
use crate::sender::Sender;

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
    /// The topic's partitions: a key's records all go to its hash's partition.
    partitions: u32,
    publisher: Publisher,
    deadline: Duration,
}

impl Idempotency {
    /// Creates the topic if missing, reads it to its end, and follows it.
    pub async fn start(kafka: &KafkaConfig, topic: String, ttl: Duration, publisher: Publisher, deadline: Duration) -> Result<Self, LogError> {
        log::create(kafka, &topic, ttl).await?;
        // A live request holds its claim at most twice the deadline (the claim's write and
        // read-back, then the event's send); the margin covers the instances' clocks.
        let claim_ttl = deadline * 2 + Duration::from_secs(10);
        let store = Store::new(ttl.as_millis() as i64, claim_ttl.as_millis() as i64);
        let loaded = log::load_and_follow(kafka, &topic, &store, Duration::from_secs(30)).await?;
        tracing::info!(topic = %topic, records = loaded.records, "idempotency records loaded");
        Ok(Idempotency { store, topic, partitions: loaded.partitions, publisher, deadline })
    }

    /// Why the topic's reader cannot read it, while it cannot (`/health` reports it): a
    /// claim would then never be read back, and every request with a key would get `503`.
    pub fn reader_error(&self) -> Option<String> {
        self.store.reader_error()
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

    /// Claims the key of a fresh request on the topic (see the [module docs](self)): what
    /// the topic's order says of the claim, and the claim's nonce (to [`Idempotency::release`]
    /// it if the request fails). A claim not written or not read back by `until` (the
    /// request's deadline) is a `503` (its release is written, when it can be).
    pub async fn claim(&self, sender: &Sender, progress: &InProgress, now_ms: i64, until: tokio::time::Instant) -> Result<(Claimed, String), Problem> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let claim = LogRecord::Claim { claim: Claim { nonce: nonce.clone(), at_ms: now_ms } };
        let record = log::record(&self.topic, progress.hash(), &claim, self.partitions).map_err(|e| Problem::unavailable(e.to_string(), Duration::from_secs(1)))?;
        let (partition, offset) = sender.send_by(record, until).await?;
        if !self.store.read_past(partition, offset, until).await {
            self.release(progress.hash(), &nonce).await;
            return Err(Problem::unavailable("the Idempotency-Key's claim was not read back within the deadline", Duration::from_secs(1)));
        }
        Ok((self.store.decide(progress, &nonce), nonce))
    }

    /// Withdraws the claim `nonce` on the key with hash `hash` (its request failed): queued
    /// in the producer before this returns, so it lands before the claim of any retry the
    /// failure's answer leads to (same key, same partition, one idempotent producer); its
    /// acknowledgement is awaited in the background. Until it is written, the key stays
    /// claimed (at most the claim's TTL).
    pub async fn release(&self, hash: &str, nonce: &str) {
        let warn = |e: &dyn std::fmt::Display| tracing::warn!(error = %e, "idempotency claim not released; the key is busy until the claim expires");
        let record = match log::record(&self.topic, hash, &LogRecord::Release { release: nonce.to_owned() }, self.partitions) {
            Ok(record) => record,
            Err(e) => return warn(&e),
        };
        // Queueing waits only while the producer's in-flight bound is full: not long.
        match tokio::time::timeout(Duration::from_millis(200), self.publisher.enqueue(record)).await {
            Ok(Ok(delivery)) => self.acknowledged_later(delivery, warn),
            Ok(Err(e)) => warn(&e),
            Err(_) => warn(&"the producer's queue stayed full"),
        }
    }

    /// Records a fresh request's `202`: in memory at once, then on the topic, waiting for
    /// the broker until `until` (the request's deadline, so a request with a key waits no
    /// longer than one without) and after it in the background.
    pub async fn finish(&self, progress: InProgress, accepted: crate::handler::Accepted, now_ms: i64, until: tokio::time::Instant) {
        let warn = |e: &dyn std::fmt::Display| tracing::warn!(error = %e, "idempotency record not written; a retry after a restart or on another instance publishes again (same event id)");
        let hash = progress.hash().to_owned();
        let stored = progress.finish(accepted, now_ms);
        let record = match log::record(&self.topic, &hash, &LogRecord::Done(stored), self.partitions) {
            Ok(record) => record,
            Err(e) => return warn(&e),
        };
        let mut delivery = match tokio::time::timeout_at(until, self.publisher.enqueue(record)).await {
            Ok(Ok(delivery)) => delivery,
            Ok(Err(e)) => return warn(&e),
            Err(_) => return warn(&"the producer's queue stayed full until the deadline"),
        };
        match tokio::time::timeout_at(until, &mut delivery).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn(&e),
            Err(_) => self.acknowledged_later(delivery, warn),
        }
    }

    /// Awaits `delivery` in the background for up to the deadline, calling `warn` if it
    /// fails or does not come.
    fn acknowledged_later(&self, delivery: herald_bus::publisher::Delivery, warn: fn(&dyn std::fmt::Display)) {
        let deadline = self.deadline;
        tokio::spawn(async move {
            match tokio::time::timeout(deadline, delivery).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn(&e),
                Err(_) => warn(&"not acknowledged within the deadline"),
            }
        });
    }
}
