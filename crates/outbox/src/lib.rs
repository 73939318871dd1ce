//! # herald-outbox: transactional outbox and inbox for PostgreSQL services
//!
//! A service whose state lives in PostgreSQL cannot write its database and Kafka
//! atomically. With the outbox it writes its events into a table in the **same**
//! transaction as its state ([`Outbox::publish`]); a [`Relay`](relay::Relay) sends the
//! committed rows to Kafka and deletes them. With the inbox ([`inbox::Inbox`]) a consumer
//! whose handler writes to PostgreSQL records each event's id in the handler's transaction
//! and skips ids it has seen, so the handler's effects happen once.
//!
//! ```no_run
//! # herald_bus::family! { #[derive(Debug)] pub enum OrderEvent { Placed(OrderPlaced) } }
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct OrderPlaced { order_id: String }
//! # impl herald_bus::Event for OrderPlaced { const TYPE: &'static str = "shop.orders.OrderPlaced"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.order_id } }
//! # async fn run() -> Result<(), herald_outbox::OutboxError> {
//! use herald_outbox::{relay::{Relay, RelayOptions}, Outbox, OutboxTable};
//! const ORDERS: herald_bus::Topic<OrderEvent> = herald_bus::Topic::new("shop.orders");
//!
//! let pg = herald_outbox::config("postgres://herald@127.0.0.1:55432/herald")?;
//! let mut client = herald_outbox::connect(&pg).await?;
//! let table = OutboxTable::new("shop_outbox")?;
//! table.ensure_schema(&mut client).await?;
//!
//! // In the service: state and event in one transaction.
//! let outbox = Outbox::new(table.clone(), "/shop/checkout");
//! let tx = client.transaction().await?;
//! outbox.publish(&tx, &ORDERS, &OrderPlaced { order_id: "o-1".into() }).await?;
//! tx.commit().await?;
//!
//! // In the relay (any number of instances).
//! let relay = Relay::new(pg, table, &herald_bus::KafkaConfig::new("127.0.0.1:9092"), RelayOptions::default())?;
//! relay.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`OutboxTable`] (`table.rs`): the table, its buckets and channel, `ensure_schema`.
//! - [`Outbox`] (`outbox.rs`): adds an event to the table in the caller's transaction.
//! - [`relay`]: the relay (batches, wake-ups, bucket ownership, fault hooks, health).
//! - [`inbox`]: the inbox, a bus handler whose work runs in a PostgreSQL transaction.
//! - [`config`], [`connect`] (`connect.rs`): PostgreSQL connections.
//! - [`OutboxError`] (`error.rs`).
//!
//! # Guarantees
//! - **Atomic with the service's state.** An event is in the outbox if and only if the
//!   caller's transaction commits.
//! - **Every committed row reaches the topic, at least once, with one event id.** The row
//!   holds the finished record (key, Avro single-object value, CloudEvents headers with
//!   `ce_id` fixed at insert time); the relay deletes it only after the broker
//!   acknowledged it (`acks=all`, idempotent producer). A crash of the relay, the broker or
//!   PostgreSQL at any point sends it again later with the same `ce_id`, never under a new
//!   one, so consumers dedupe by `ce_id` (the inbox does).
//! - **In order per aggregate.** [`Outbox::publish`] takes a transaction-level advisory
//!   lock on the aggregate, so one aggregate's rows get their `seq` in commit order; the
//!   relay sends them in `seq` order, key = aggregate id (one partition), one relay per
//!   aggregate at a time, and deletes a row only when every earlier row of its aggregate
//!   was delivered. So each row's last copy on the topic follows every earlier row of its
//!   aggregate. Copies can come earlier too (same `ce_id`): after a crash the resend
//!   repeats a suffix; after a failed delivery, rows of the aggregate queued behind it
//!   may have been written first and are sent again after it. Without failures the
//!   first copies are in `seq` order. A row that keeps failing is retried, never skipped,
//!   and holds back its aggregate's later rows (see [`relay`]).
//! - **One relay per aggregate.** Aggregates hash into buckets; a relay owns a bucket
//!   through a PostgreSQL session-level advisory lock, freed when its session ends; a
//!   bucket whose owner vanished is relayed by no one until a takeover delay longer than
//!   the producer's delivery timeout has passed.
//! - **Exactly-once effects in the inbox.** The event id and the handler's changes commit
//!   in one transaction.

mod connect;
mod error;
pub mod inbox;
mod outbox;
pub mod relay;
mod table;

pub use connect::{config, connect};
pub use error::{is_transient, OutboxError};
pub use outbox::Outbox;
pub use table::{OutboxTable, DEFAULT_BUCKETS};
