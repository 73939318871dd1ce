//! The order-status read view: where each order stands, for the people who ask ("where is
//! my order?"), built from the saga's three public topics.
//!
//! A projection on herald-projector ([`OrderStatus`]) of `shop.orders`, `shop.inventory`
//! and `shop.payments`, keyed by order id: placed / confirmed / cancelled with the reason,
//! the amounts (ordered, charged, refunded), what the stock and the payment did, and the
//! saga's last step. Each topic is read by its own projector (one consumer group per
//! topic, `GROUP.TOPIC`), all writing one store; the events of an order therefore arrive in
//! any order across topics, and every column is written so that the row ends the same
//! whatever that order ([`projection`] says how).
//!
//! `shop order-status --store sqlite:PATH --http ADDR` runs it as a process (the `shop`
//! binary) and serves the view over HTTP ([`http`]):
//! - `GET /views/order_status/{order_id}`: one order ([`OrderStatusRow`]), `404` when
//!   unknown;
//! - `GET /views/order_status?status=cancelled&reason=timeout&limit=100`: a list, most
//!   recently changed first.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_shop::order_status;
//! let store = herald_projector::store::open("sqlite:order_status.db")?;
//! let config = herald_bus::KafkaConfig::new("127.0.0.1:9092");
//! // Partitions of a view that stopped answering move after 10 s (librdkafka's default: 45 s).
//! let properties = [("session.timeout.ms".to_owned(), "10000".to_owned())];
//! let projectors = order_status::projectors(&config, "order-status", "", store.clone(), &properties).await?;
//! // run each projector; meanwhile, read the view:
//! let mut conn = store.connect()?;
//! let order = order_status::query::get(&mut *conn, "order-1")?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`event`]: [`ShopEvent`], the family of every event on the three public topics.
//! - [`projection`]: [`OrderStatus`], the projection, and [`projectors`] to build its three
//!   projectors.
//! - [`query`]: [`OrderStatusRow`], [`query::get`] and [`query::list`] from the store.
//! - [`http`]: the view's routes.

pub mod event;
pub mod http;
pub mod projection;
pub mod query;

pub use event::ShopEvent;
pub use projection::{projectors, OrderStatus, PROJECTION};
pub use query::{Filter, OrderStatusRow};
