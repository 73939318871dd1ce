//! The bus consumer: typed handlers over a consumer group, at least once, in order per
//! key. It is the [consumer runtime](crate::runtime) with one [`Sink`](crate::runtime::Sink):
//! each topic's handler, behind the shared retry and dead-letter layers.
//!
//! # How a record flows
//! 1. The main loop receives records from one rdkafka queue (never blocked by handlers: it
//!    keeps polling, so a slow handler cannot push the consumer out of its group).
//! 2. Each record goes to its partition's worker through a queue, in batches: after each
//!    record the loop takes whatever else the client has ready (up to 512 records),
//!    then hands each partition its records at once. Queues are bounded in
//!    bytes: when a partition holds more than a quarter of `max_buffered_bytes`, or all
//!    partitions together more than all of it, that partition is paused in the client
//!    (the main loop keeps polling), and resumed once its queue is down to half of its
//!    share and the total to three quarters. Pausing makes librdkafka drop what it
//!    prefetched for the partition, so the budget is large enough that it is rare.
//! 3. The worker decodes the record, calls the handler with retries, dead-letters what
//!    cannot be handled, and only then stores the offset. A dead letter that can never be
//!    written (too large for the dead-letter topic, not authorized) parks the partition:
//!    paused, not stored, reported by [`ConsumerHealth::parked`].
//! 4. librdkafka commits stored offsets every `auto.commit.interval.ms`, and before a
//!    revocation completes; shutdown commits synchronously.
//!
//! # Shutdown
//! [`Consumer::run`] takes a shutdown future. When it completes: intake stops, workers
//! finish the records already queued (up to `drain_timeout`, then they stop after their
//! current record), stored offsets are committed, the dead-letter producer is flushed, and
//! the consumer leaves its group.
//!
//! # Fatal conditions
//! [`Consumer::run`] returns an error (after the same orderly shutdown) when the broker
//! refuses the credentials or permissions, the client hits a fatal error, or a topic it
//! was reading is deleted: see [`ConsumerError::is_fatal`].

mod builder;
mod decode;
mod handler;
pub(crate) mod record;
pub(crate) mod route;
mod sink;

use std::future::Future;

pub use builder::{CodecFactory, ConsumerBuilder};
pub use decode::{decode, decode_record, header_failure};
pub use handler::{Handler, HandlerError};
pub use record::OwnedRecord;
pub use route::UnknownTypes;
pub use crate::runtime::{ConsumerError, ConsumerHealth, RetryPolicy, CONSUMER_DEFAULTS};

use crate::runtime::Runtime;
use sink::Routes;

/// A running consumer group member. See the [module docs](self) for the flow.
pub struct Consumer {
    runtime: Runtime<Routes>,
}

impl Consumer {
    /// Starts building a consumer in consumer group `group`.
    pub fn builder(config: crate::KafkaConfig, group: impl Into<String>) -> ConsumerBuilder {
        ConsumerBuilder::new(config, group.into())
    }

    /// Live state for health checks.
    pub fn health(&self) -> std::sync::Arc<ConsumerHealth> {
        self.runtime.health()
    }

    /// Consumes until `shutdown` completes, then shuts down in order (see the module docs).
    /// Returns an error after the orderly shutdown when a fatal condition ends the
    /// consumer (see [`ConsumerError::is_fatal`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        self.runtime.run(shutdown).await
    }
}
