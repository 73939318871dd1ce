//! # herald-shop: the reference domain
//!
//! The `shop.orders` events, tied to their schemas in `schemas/shop/orders/`. Herald's
//! demo, examples, tests and benchmarks use them; they also show how a team declares its
//! own events.
//!
//! # Layout
//! - [`orders`]: the order events and the [`orders::OrderEvent`] family.

pub mod orders;

pub use orders::{OrderCancelled, OrderConfirmed, OrderEvent, OrderLine, OrderPlaced, ORDERS};
