//! [`ShopEvent`]: every event of the saga's public topics in one family, so one projection
//! can read all three topics.

use crate::inventory::{StockRejected, StockReleased, StockReserved};
use crate::orders::{OrderCancelled, OrderConfirmed, OrderPlaced};
use crate::payments::{PaymentCharged, PaymentDeclined, PaymentRefunded};

herald_bus::family! {
    /// Every event on `shop.orders`, `shop.inventory` and `shop.payments`.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ShopEvent {
        /// See [`OrderPlaced`].
        Placed(OrderPlaced),
        /// See [`OrderConfirmed`].
        Confirmed(OrderConfirmed),
        /// See [`OrderCancelled`].
        Cancelled(OrderCancelled),
        /// See [`StockReserved`].
        StockReserved(StockReserved),
        /// See [`StockRejected`].
        StockRejected(StockRejected),
        /// See [`StockReleased`].
        StockReleased(StockReleased),
        /// See [`PaymentCharged`].
        Charged(PaymentCharged),
        /// See [`PaymentDeclined`].
        Declined(PaymentDeclined),
        /// See [`PaymentRefunded`].
        Refunded(PaymentRefunded),
    }
}

/// The public topics (unprefixed) whose events make up [`ShopEvent`].
///
/// ```
/// assert_eq!(herald_shop::order_status::event::TOPICS[0], herald_shop::ORDERS.name());
/// ```
pub const TOPICS: [&str; 3] = ["shop.orders", "shop.inventory", "shop.payments"];

#[cfg(test)]
mod tests {
    use herald_bus::EventFamily;

    use super::*;

    #[test]
    fn the_topics_are_the_public_ones() {
        assert_eq!(TOPICS, [crate::ORDERS.name(), crate::inventory::INVENTORY.name(), crate::payments::PAYMENTS.name()]);
    }

    #[test]
    fn the_family_knows_every_public_event_and_its_older_versions() {
        for family in [crate::OrderEvent::TYPES, crate::inventory::InventoryEvent::TYPES, crate::payments::PaymentEvent::TYPES] {
            for t in family {
                assert!(ShopEvent::TYPES.contains(t), "{t} missing");
                assert!(ShopEvent::schemas().latest(t).is_some(), "{t} has no schema");
            }
        }
        // OrderPlaced v1 writers still read.
        let v1 = <OrderPlaced as herald_bus::Event>::HISTORY[0];
        let fingerprint = herald_bus::schema::SchemaSet::default().add_str(v1).expect("v1").fingerprint;
        assert!(ShopEvent::schemas().by_fingerprint(&fingerprint).is_some());
    }
}
