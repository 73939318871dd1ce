//! # herald-shop: the reference domain
//!
//! The `shop.orders` events, tied to their schemas in `schemas/shop/orders/`. Herald's
//! demo, examples, tests and benchmarks use them; they also show how a team declares its
//! own events.
//!
//! It also holds the reference saga, order fulfilment: three roles (orders, inventory,
//! payments) as herald-choreography participants, each a pure decision tested without a
//! broker.
//!
//! # Data flow
//! `OrderPlaced` → inventory splits the order into one `ReserveSku` per SKU; the stock of
//! each SKU (state per SKU, commands repartitioned by SKU: one writer per SKU) reserves or
//! refuses; the order's join publishes `StockReserved` when every SKU reserved, or
//! `StockRejected` at the first short SKU and releases the others. `StockReserved` →
//! payments asks the customer's credit (state per customer, repartitioned by customer: one
//! writer per customer) for a `ChargeCredit` → `PaymentCharged` or `PaymentDeclined`. The
//! orders role turns outcomes (or its payment timeout) into exactly one `OrderConfirmed` or
//! `OrderCancelled`; a cancellation makes inventory release and payments refund, once,
//! including work that lands after it. The diagram and why it keeps stock and credit exact
//! are in [`saga`]; `herald saga diagram` prints it as Mermaid.
//!
//! # Layout
//! - [`orders`]: the order events and the [`orders::OrderEvent`] family.
//! - [`inventory`]: `shop.inventory` events, and the inventory role's internal per-SKU
//!   commands and replies.
//! - [`payments`]: `shop.payments` events, and the payments role's internal per-customer
//!   credit commands.
//! - [`saga`]: the participants: [`saga::Orders`] (outcomes and the payment timeout),
//!   [`saga::Reservations`] and [`saga::Stock`] (inventory, per order and per SKU),
//!   [`saga::Billing`] and [`saga::Credit`] (payments, per order and per customer), and the
//!   saga's [`saga::check`] and [`saga::diagram`].
//! - [`accounts`]: the accounts aggregate (a wallet per customer; herald-aggregate),
//!   which `shop accounts` runs.
//! - [`order_status`]: the order-status read view (a herald-projector projection of the
//!   three public topics, served over HTTP by `shop order-status`).
//!
//! # Guarantees
//! The participants' decisions are deterministic and unit-tested with the choreography
//! test kit: every rule, duplicates, late outcomes and the timeout. The `shop` binary runs
//! them on the choreography engine (one transaction per batch of reactions, state in
//! changelogs, repartition topics); `tests/processes` runs its three roles as processes
//! against the broker, kills, freezes and restarts them, and checks the saga's guarantees
//! from the public topics with a reader that shares no code with the decisions.

/// Implements [`herald_bus::Event`] for a shop event keyed by its `order_id`, with its
/// schema from `schemas/shop/<path>`.
macro_rules! order_event {
    ($type:ty, $name:literal, $path:literal) => {
        impl herald_bus::Event for $type {
            const TYPE: &'static str = $name;
            const SCHEMA: &'static str = include_str!(concat!("../../../schemas/shop/", $path));
            fn aggregate_id(&self) -> &str {
                &self.order_id
            }
        }
    };
}
pub(crate) use order_event;

pub mod accounts;
pub mod inventory;
pub mod order_status;
pub mod orders;
pub mod payments;
pub mod saga;

pub use orders::{OrderCancelled, OrderConfirmed, OrderEvent, OrderLine, OrderPlaced, ORDERS};
