//! # herald-registry: Confluent schema-registry framing for Herald
//!
//! Herald frames Avro payloads with single-object encoding by default (no server
//! needed). Teams whose other services use a Confluent-compatible schema registry
//! (Confluent Schema Registry, Apicurio Registry's `ccompat` API, Redpanda, Karapace)
//! plug [`Confluent`] into the publisher and consumer instead; [`Dual`] reads both
//! framings from one topic so a topic can migrate without stopping.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use herald_bus::{Consumer, KafkaConfig, Publisher, PublisherOptions};
//! use herald_registry::{CodecConfig, Confluent, Dual, Format, Registry, RegistryConfig};
//!
//! let kafka = KafkaConfig::new("127.0.0.1:9092");
//! let registry = Registry::new(RegistryConfig::new("http://127.0.0.1:8081"))?;
//! let confluent = Confluent::new(registry);
//!
//! // Producers write the Confluent wire format, registering schemas by record name.
//! let publisher = Publisher::with_codec(&kafka, PublisherOptions::new("/shop"), Arc::new(confluent.clone()))?;
//!
//! // Consumers read both framings while producers migrate.
//! let formats = CodecConfig::new(Format::Confluent);
//! let consumer = Consumer::builder(kafka, "billing")
//!     .codec(move |schemas| Arc::new(Dual::new(schemas, confluent.clone(), formats.clone())));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`RegistryConfig`] (URL, timeout, credentials, trusted CAs) and [`Backoff`].
//! - [`client`]: [`Registry`], the REST client: register, look up, fetch by id; cached.
//! - [`error`]: [`RegistryError`], classified transient or permanent.
//! - [`references`]: Confluent schema references (types registered under other subjects),
//!   inlined into one standalone schema when a schema is fetched by id.
//! - [`subject`]: [`SubjectStrategy`], the subject a schema is registered under.
//! - [`wire`]: the Confluent frame, `0x00` + 4-byte big-endian schema id.
//! - [`confluent`]: [`Confluent`], the codec (`herald_bus::codec::Codec`).
//! - [`dual`]: [`Dual`], reading both framings by their first byte; [`CodecConfig`]
//!   chooses each topic's written [`Format`].
//!
//! # Guarantees
//! - **A schema id means one schema forever.** Ids and schemas are cached without
//!   expiry; failures are never cached, so a registry that comes back is used again.
//! - **Bounded retries.** A 5xx, 429, timeout or refused connection is retried inside
//!   the client with exponential backoff ([`Backoff`], 4 attempts by default), then
//!   reported as [`RegistryError::Unavailable`]. On publish that is
//!   `PublishError::Codec`, which `is_retryable()`: nothing is sent.
//! - **An unknown schema id is permanent.** A 404 on `GET /schemas/ids/{id}` is a
//!   `DecodeError`; the consumer dead-letters the record with the reason
//!   `unknown schema id N: ...` and goes on.
//! - **Registry outage or refusal while consuming waits.** A writer schema that cannot
//!   be fetched after the retries because the registry is down, answers 401/403/407
//!   (a rotated or wrong credential), 408/429, or answers 2xx with something that is not
//!   its JSON (a proxy's HTML page) is `DecodeError::Unavailable`: the consumer waits and
//!   retries the record instead of dead-lettering it. Only answers about the record
//!   itself (404 for its id, a schema that is not usable Avro, another 4xx) are
//!   permanent.
//! - **Schema references are followed.** A writer's schema that names types registered
//!   under other subjects (`references`, as Confluent's serializers write them for shared
//!   types) is read with them, recursively, as the same schema written in one piece (the
//!   same fingerprint), its names resolved per the Avro specification. A reference the
//!   registry does not have, or two that define one type differently, is a permanent
//!   error.
//! - **No schema guessing.** Publishing with auto-registration off fails with
//!   `PublishError::UnknownSchema` when the subject does not hold the schema.
//! - **https with rustls.** `https://` registries are verified against the system's
//!   root certificates plus any CA given with [`RegistryConfig::ca_file`] or
//!   [`RegistryConfig::ca_pem`]; an unverifiable certificate fails the request.

pub mod client;
pub mod config;
pub mod confluent;
pub mod dual;
pub mod error;
pub mod references;
pub mod subject;
pub mod wire;

pub use client::Registry;
pub use config::{Backoff, RegistryConfig};
pub use confluent::Confluent;
pub use dual::{CodecConfig, Dual, Format};
pub use error::RegistryError;
pub use subject::SubjectStrategy;
