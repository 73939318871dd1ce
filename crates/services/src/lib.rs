//! # herald-services: a service registry and discovery on Kafka
//!
//! Long-running Herald processes register themselves on a compacted topic
//! (`herald.services` by default); clients read that topic into a live map and balance
//! requests across the instances of a service.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_services::RegistryError> {
//! use std::time::Duration;
//! use herald_bus::KafkaConfig;
//! use herald_services::{Balancer, Directory, Instance, Registration, Settings, Strategy};
//! let config = KafkaConfig::new("127.0.0.1:9092");
//! let settings = Settings::default();
//! // In the service:
//! let me = Instance::new("order-status", "order-status-1", "http://127.0.0.1:8081", "0.1.0")?;
//! let registration = Registration::register(&config, &settings, me).await?;
//! // In a client:
//! let directory = Directory::start(&config, &settings).await?;
//! directory.caught_up(Duration::from_secs(10)).await;
//! let balancer = Balancer::new(Strategy::RoundRobin);
//! let lease = directory.pick(&balancer, "order-status", None);
//! # drop(lease);
//! registration.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! - [`announce`]: how a long-running process registers itself (one guard and one set of
//!   options for every Herald binary).
//! - [`instance`]: the record (JSON, self-describing; why not Avro is explained there).
//! - [`registration`]: registering, heartbeats, deregistering with a tombstone.
//! - [`directory`]: reading the topic from the beginning into a live map.
//! - [`groups`]: what registered consumers' groups are doing (state, members, assigned
//!   partitions, lag in records and seconds), with one Kafka client.
//! - [`table`]: the map itself and TTL expiry (pure, tested with a paused clock).
//! - [`balance`]: round robin, least outstanding requests, consistent hashing, outlier
//!   ejection.
//! - [`settings`], [`topic`], [`error`].
//!
//! ## Guarantees
//! - The registry topic has one partition and `cleanup.policy=compact`; key
//!   `service/instance`. It is created if missing; an existing topic is left as it is.
//! - [`Registration::register`] returns once the broker acknowledged the first record
//!   (`acks=all`). A heartbeat re-publishes the record every interval.
//! - [`Registration::shutdown`] stops heartbeats first, then writes a tombstone and waits
//!   for its acknowledgement: directories drop the instance when they read it.
//! - A process that dies (or drops its registration) stops heartbeating; directories count
//!   it as expired once its last heartbeat is older than the TTL, measured on their own
//!   monotonic clock (a record already old when read is aged by its wall-clock timestamp).
//!   That clock counts only time up to which the directory is known to have read every
//!   record on the registry topic (it looks every [`directory::REACHABLE_EVERY`] or
//!   eighth of the TTL): a broker's outage or a stalled consumer expires nobody, and an
//!   instance that died meanwhile expires once the topic is read again and the rest of its
//!   TTL has passed. An instance expires once the directory counted a TTL after its last
//!   heartbeat was read: never before, and a look or two after (more while its consumer
//!   lags).
//! - librdkafka's clients sometimes stay stuck after a broker restart. A directory whose
//!   consumer has not read for [`directory::STALLED_AFTER`] replaces it (going on after
//!   the last record read); a registration whose heartbeat is not acknowledged within
//!   [`Settings::ack_timeout`] replaces its producer.
//! - Expired instances are never handed out by [`Directory::pick`]; they stay listed (as
//!   expired) by [`Directory::entries`] for [`directory::FORGET_AFTER`].
//!
//! Health here is heartbeats plus the callers' reported outcomes; active `/health` checks
//! are the client's (the gateway runs them for its query routes).

pub mod announce;
pub mod balance;
pub mod directory;
pub mod error;
pub mod groups;
pub mod instance;
pub mod registration;
pub mod settings;
pub mod table;
pub mod topic;

pub use balance::outlier::Ejection;
pub use balance::{Balancer, Lease, Strategy};
pub use directory::Directory;
pub use error::RegistryError;
pub use instance::Instance;
pub use registration::Registration;
pub use settings::Settings;
pub use table::{Entry, Health};
