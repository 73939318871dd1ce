//! # herald-bus: typed domain events on Kafka
//!
//! Publish domain events as Avro (single-object encoding) with CloudEvents metadata in
//! Kafka headers, keyed by aggregate id; consume them with typed handlers in a consumer
//! group.
//!
//! ```no_run
//! # herald_bus::family! { #[derive(Debug)] pub enum OrderEvent { Placed(OrderPlaced) } }
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct OrderPlaced { order_id: String }
//! # impl herald_bus::Event for OrderPlaced { const TYPE: &'static str = "shop.orders.OrderPlaced"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.order_id } }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_bus::{Consumer, Envelope, KafkaConfig, Publisher, PublisherOptions, Topic};
//! const ORDERS: Topic<OrderEvent> = Topic::new("shop.orders");
//!
//! let config = KafkaConfig::new("127.0.0.1:9092");
//! let publisher = Publisher::new(&config, PublisherOptions::new("/shop/checkout"))?;
//! publisher.publish(&ORDERS, &OrderPlaced { order_id: "o-1".into() }).await?;
//!
//! Consumer::builder(config, "billing")
//!     .subscribe(&ORDERS, |e: Envelope<OrderEvent>| async move {
//!         match e.event { OrderEvent::Placed(p) => println!("placed {}", p.order_id) }
//!         Ok(())
//!     })
//!     .build().await?
//!     .run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`event`]: the [`Event`] trait (a Rust type tied to its `.avsc`), [`EventFamily`]
//!   and the [`family!`] macro (the closed set of events of one topic).
//! - [`schema`]: [`schema::SchemaSet`], schemas by fingerprint and name; the spec's
//!   parsing canonical form ([`schema::canonical`]) and [`schema::Fingerprint`].
//! - [`codec`]: payload framing ([`codec::SingleObject`]) behind the [`codec::Codec`] trait.
//! - [`envelope`]: [`Metadata`] and its CloudEvents headers, [`Envelope`] for handlers.
//! - [`publisher`]: the [`Publisher`].
//! - [`runtime`]: the one consumer runtime (polling, rebalances, flow control, retry and
//!   dead-letter layers, shutdown) behind every consumer, with pluggable sinks.
//! - [`consumer`]: [`Consumer`] (the runtime with typed handlers as its sink), [`Handler`].
//! - [`dead_letter`]: dead-letter records and their headers.
//! - [`admin`]: topic creation. [`config`]: [`KafkaConfig`]. [`topic`]: [`Topic`].
//! - [`partitioner`]: Kafka's murmur2 partitioner, to predict where a key lands.
//! - [`rebootstrap`]: the bootstrap servers given back to a client librdkafka left with no
//!   broker.
//! - [`redact`]: where a URL's password lies, to print the URL without it.
//! - [`timestamp`]: [`timestamp::TimestampMillis`], Avro's `timestamp-millis` in events.
//! - [`trace`]: W3C trace context carried in `traceparent`.
//! - [`upcast`]: typed conversions from earlier event versions.
//!
//! # Guarantees
//! - **Order per aggregate.** The key is the aggregate id; the producer is idempotent with
//!   `acks=all` and partitions with murmur2 like the Java client; the consumer handles a
//!   partition's records one at a time. So one aggregate's events are handled in the order
//!   they were published, with one limit: a record whose delivery times out (the broker
//!   away longer than `message.timeout.ms`) does not stop later records of its key that
//!   were already queued (see [`Publisher::publish_all`]). (A [`Publisher`] refuses a configuration that would weaken this:
//!   idempotence off, `acks` other than `all`, a random partitioner; see
//!   [`publisher::weakened`].) If the producer fails fatally, the publisher refuses every send
//!   with [`PublishError::Fatal`] (handing the record back) until
//!   [`Publisher::reset`]: it never switches producers silently, which would let later
//!   sends overtake the caller's retries.
//! - **At least once, nothing skipped.** An offset is stored only after its record was
//!   handled, or written to the dead-letter topic. A crash or a rebalance can repeat
//!   records (handlers must be idempotent; `ce_id` identifies an event), never lose them.
//! - **Bad input does not stop the consumer.** Undecodable records, unknown types, and
//!   handlers that fail after bounded retries go to `<topic>.dlq` (`<topic>_dlq` for a name
//!   with `_`: [`dead_letter::topic_for`]) with the original bytes
//!   and the reason. While the dead-letter topic cannot be written the partition waits
//!   and retries; a dead letter that can never be written (too large, not authorized)
//!   parks its partition and makes the consumer unhealthy, saying why.
//! - **Fingerprints as every Avro library computes them.** The single-object header
//!   carries the CRC-64-AVRO of the specification's parsing canonical form, equal to
//!   Java's `SchemaNormalization` and fastavro's for every schema, logical types included
//!   (herald-schema's reference tests check a corpus against both), so Java and Python
//!   readers find Herald's writer schemas and Herald finds theirs.
//! - **Bounded memory.** The client's prefetch queue, the per-partition buffers and the
//!   publisher's in-flight sends are all bounded.
//! - **Orderly shutdown.** Stop intake, drain, commit, flush, leave the group.

pub mod admin;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod envelope;
pub mod event;
pub mod headers;
pub mod last_error;
pub mod panics;
pub mod partitioner;
pub mod publisher;
pub mod rebootstrap;
pub mod redact;
pub mod runtime;
pub mod schema;
pub mod timestamp;
pub mod topic;
pub mod trace;
pub mod upcast;

pub use config::KafkaConfig;
pub use consumer::{Consumer, ConsumerBuilder, ConsumerError, ConsumerHealth, Handler, HandlerError, RetryPolicy, UnknownTypes};
pub use envelope::{Envelope, Metadata, Position};
pub use event::{Event, EventFamily};
pub use publisher::{PublishError, Published, Publisher, PublisherOptions};
pub use topic::Topic;

#[doc(hidden)]
pub use apache_avro;
