//! Inventory events: the public outcome of a reservation (`shop.inventory`), and the
//! inventory role's internal per-SKU commands and replies. Every one is keyed by `order_id`.

use apache_avro::AvroSchema;
use herald_bus::Topic;
use serde::{Deserialize, Serialize};

/// The public topic of inventory outcomes.
pub const INVENTORY: Topic<InventoryEvent> = Topic::new("shop.inventory");
/// Internal: commands to one SKU's stock (keyed by order; the stock participant
/// repartitions them by SKU).
pub const STOCK_COMMANDS: Topic<StockCommand> = Topic::new("shop.inventory.commands");
/// Internal: the stock's replies to reservation commands (keyed by order).
pub const STOCK_REPLIES: Topic<StockReply> = Topic::new("shop.inventory.replies");

/// A quantity of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.inventory")]
pub struct StockLine {
    /// Stock keeping unit.
    pub sku: String,
    /// Units, summed over the order's lines of this SKU.
    pub quantity: i64,
}

/// Every SKU of the order is reserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.inventory")]
pub struct StockReserved {
    /// The order.
    pub order_id: String,
    /// Who ordered (payments charges them).
    pub customer_id: String,
    /// Order total in minor units.
    pub total_cents: i64,
    /// What is reserved, one line per SKU.
    pub lines: Vec<StockLine>,
}
crate::order_event!(StockReserved, "shop.inventory.StockReserved", "inventory/StockReserved/v1.avsc");

/// The order asks more of a SKU than is in stock; nothing is reserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.inventory")]
pub struct StockRejected {
    /// The order.
    pub order_id: String,
    /// A SKU that is short.
    pub sku: String,
    /// Units the order asks of it.
    pub requested: i64,
    /// Units that were available.
    pub available: i64,
}
crate::order_event!(StockRejected, "shop.inventory.StockRejected", "inventory/StockRejected/v1.avsc");

/// The order's reservation was returned to stock (the order was cancelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.inventory")]
pub struct StockReleased {
    /// The order.
    pub order_id: String,
    /// What was returned, one line per SKU.
    pub lines: Vec<StockLine>,
}
crate::order_event!(StockReleased, "shop.inventory.StockReleased", "inventory/StockReleased/v1.avsc");

herald_bus::family! {
    /// Every event on [`INVENTORY`].
    #[derive(Debug, Clone, PartialEq)]
    pub enum InventoryEvent {
        /// See [`StockReserved`].
        Reserved(StockReserved),
        /// See [`StockRejected`].
        Rejected(StockRejected),
        /// See [`StockReleased`].
        Released(StockReleased),
    }
}

/// Internal: reserve `quantity` units of `sku` for `order_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.inventory")]
pub struct ReserveSku {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units to reserve.
    pub quantity: i64,
}
crate::order_event!(ReserveSku, "shop.inventory.ReserveSku", "inventory/ReserveSku/v1.avsc");

/// Internal: return what `sku` holds for `order_id`, if anything; never reserve it after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.inventory")]
pub struct ReleaseSku {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
}
crate::order_event!(ReleaseSku, "shop.inventory.ReleaseSku", "inventory/ReleaseSku/v1.avsc");

herald_bus::family! {
    /// Every event on [`STOCK_COMMANDS`].
    #[derive(Debug, Clone, PartialEq)]
    pub enum StockCommand {
        /// See [`ReserveSku`].
        Reserve(ReserveSku),
        /// See [`ReleaseSku`].
        Release(ReleaseSku),
    }
}

impl StockCommand {
    /// The SKU the command is for: the stock participant's state key.
    pub fn sku(&self) -> &str {
        match self {
            StockCommand::Reserve(c) => &c.sku,
            StockCommand::Release(c) => &c.sku,
        }
    }
}

/// Internal: `sku` reserved `quantity` units for `order_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.inventory")]
pub struct SkuReserved {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units reserved.
    pub quantity: i64,
}
crate::order_event!(SkuReserved, "shop.inventory.SkuReserved", "inventory/SkuReserved/v1.avsc");

/// Internal: `sku` could not reserve what `order_id` asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.inventory")]
pub struct SkuShort {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units asked.
    pub requested: i64,
    /// Units available.
    pub available: i64,
}
crate::order_event!(SkuShort, "shop.inventory.SkuShort", "inventory/SkuShort/v1.avsc");

herald_bus::family! {
    /// Every event on [`STOCK_REPLIES`].
    #[derive(Debug, Clone, PartialEq)]
    pub enum StockReply {
        /// See [`SkuReserved`].
        Reserved(SkuReserved),
        /// See [`SkuShort`].
        Short(SkuShort),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_bus::event::check_schema;

    #[test]
    fn rust_types_match_their_avsc_files() {
        check_schema::<StockReserved>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<StockRejected>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<StockReleased>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<ReserveSku>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<ReleaseSku>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<SkuReserved>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<SkuShort>().unwrap_or_else(|e| panic!("{e}"));
    }
}
