//! The reference saga, order fulfilment, as five participants in three roles.
//!
//! # Data flow
//! Public topics are keyed by `order_id`. Stock and credit need one writer per SKU and per
//! customer however many instances run, so each role has a per-order participant that
//! speaks for the order and a per-resource participant whose inputs are repartitioned by
//! the resource's key (the library's [`StateKey::by`](herald_choreography::StateKey::by)):
//!
//! ```text
//!  shop.orders ──OrderPlaced──▶ inventory-reservations (per order)
//!                                 │ ReserveSku × SKU            ▲ SkuReserved / SkuShort
//!                                 ▼                             │ (shop.inventory.replies)
//!                  shop.inventory.commands ══repartition by sku══▶ inventory-stock (per SKU)
//!                                 │
//!    all SKUs reserved (a join) ──┴─▶ shop.inventory: StockReserved  │ one SKU short ─▶ StockRejected
//!                                                                      (partial reservations released)
//!  shop.inventory ──StockReserved──▶ payments-billing (per order)
//!                                 │ ChargeCredit
//!                                 ▼
//!                  shop.payments.commands ══repartition by customer_id══▶ payments-credit (per customer)
//!                                 │
//!                                 └─▶ shop.payments: PaymentCharged / PaymentDeclined
//!  shop.payments, shop.inventory ──▶ orders (per order) ──▶ shop.orders: OrderConfirmed / OrderCancelled
//!                                    (payment-timeout deadline ─▶ OrderCancelled "timeout")
//!  shop.orders ──OrderCancelled──▶ inventory-reservations: ReleaseSku × held SKU (+ StockReleased if it
//!                                  had published StockReserved); late SkuReserved released on arrival
//!                               ─▶ payments-billing: RefundCredit ─▶ payments-credit: PaymentRefunded if
//!                                  charged, else the order is closed and never charged
//! ```
//!
//! Every participant keyed by order reads topics keyed by `order_id`, so its inputs are
//! co-partitioned (the runtime creates them with the same partition count, 6) and one
//! instance owns an order's whole state.
//!
//! Why it holds:
//! - **All or nothing across SKUs.** Each SKU reserves on its own; the order's
//!   [`Join`](herald_choreography::join::Join) (all of its SKUs) decides. At the first short
//!   SKU the order is rejected and every SKU held so far is released; a reservation that
//!   comes in after that is released on arrival ([`Compensation`](herald_choreography::compensation::Compensation)).
//! - **Never beyond stock or credit.** A SKU's stock and a customer's credit each have one
//!   writer (the partition owner of their key after repartitioning), which reserves or
//!   charges only what is there.
//! - **Exactly one terminal event per order.** Only `orders` emits them, from state per
//!   order; once one is out, later outcomes change nothing.
//! - **Cancelled means net zero.** Billing forwards the cancellation to the customer's
//!   credit on the same repartitioned path as the charge, so the credit sees them in order:
//!   a charge already taken is refunded once; a charge not yet asked is never taken.
//!   Reservations release what they hold, once.

pub mod billing;
pub mod credit;
pub mod orders;
pub mod reservations;
pub mod stock;

use herald_choreography::declaration::{self, Declaration, Report};

/// How long a SKU's stock and a customer's credit remember an order after it last changed
/// them (default of [`Stock::remember`] and [`Credit::remember`]): its hold or charge (for
/// a release or refund that may still come) and that it was closed (so a duplicate command
/// changes nothing). Keep it well above the orders role's payment timeout. Before, they
/// remembered every order for ever: a SKU's state grew with each order it ever sold until
/// its changelog record passed Kafka's size limit (about 25 000 orders).
pub const REMEMBER_ORDERS_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// An order a SKU or a customer's credit will not act on again, and when it was closed
/// (epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
#[avro(namespace = "shop.saga")]
pub struct Closed {
    /// The order.
    pub order_id: String,
    /// When it was closed, epoch milliseconds.
    pub at_ms: i64,
}

/// The epoch milliseconds before which a participant that remembers orders for `remember`
/// forgets them, at `now`.
fn forget_before(now: chrono::DateTime<chrono::Utc>, remember: std::time::Duration) -> i64 {
    now.timestamp_millis().saturating_sub(i64::try_from(remember.as_millis()).unwrap_or(i64::MAX))
}

pub use billing::Billing;
pub use credit::Credit;
pub use orders::Orders;
pub use reservations::Reservations;
pub use stock::Stock;

/// The declarations of the five participants (default configuration).
pub fn declarations() -> Vec<Declaration> {
    vec![
        Declaration::of(&Orders::default()),
        Declaration::of(&Reservations),
        Declaration::of(&Stock::default()),
        Declaration::of(&Billing),
        Declaration::of(&Credit::default()),
    ]
}

/// The static check of the saga.
///
/// ```
/// let report = herald_shop::saga::check();
/// assert!(report.is_ok(), "{report}");
/// ```
pub fn check() -> Report {
    declaration::check(&declarations())
}

/// The saga as a Mermaid flowchart.
///
/// ```
/// assert!(herald_shop::saga::diagram().contains("repartition by sku"));
/// ```
pub fn diagram() -> String {
    declaration::diagram(&declarations())
}

#[cfg(test)]
mod tests;
