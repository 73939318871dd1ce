//! The reference saga (the shop's order fulfilment) as a [`TrackedSaga`].

use std::sync::OnceLock;

use herald_bus::schema::SchemaSet;
use herald_bus::EventFamily;
use herald_choreography::declaration::Declaration;
use herald_shop::inventory::{InventoryEvent, INVENTORY};
use herald_shop::payments::{PaymentEvent, PAYMENTS};
use herald_shop::{OrderEvent, ORDERS};

use crate::saga::TrackedSaga;

/// The shop's order-fulfilment saga on `shop.orders`, `shop.inventory`, `shop.payments`.
///
/// ```
/// use herald_tracker::{shop::Shop, Role, TrackedSaga};
/// let model = Shop::model();
/// assert_eq!(model.role("shop.payments.PaymentRefunded"), Role::Compensation("shop.payments.PaymentCharged".into()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Shop;

impl TrackedSaga for Shop {
    const NAME: &'static str = "shop_saga";

    fn topics() -> Vec<String> {
        vec![ORDERS.name().to_owned(), INVENTORY.name().to_owned(), PAYMENTS.name().to_owned()]
    }

    fn declarations() -> Vec<Declaration> {
        herald_shop::saga::declarations()
    }

    fn schemas() -> &'static SchemaSet {
        static SET: OnceLock<SchemaSet> = OnceLock::new();
        SET.get_or_init(|| {
            let mut set = SchemaSet::default();
            set.extend(OrderEvent::schemas());
            set.extend(InventoryEvent::schemas());
            set.extend(PaymentEvent::schemas());
            set
        })
    }
}
