//! The inventory role, per SKU: the one writer of a SKU's stock. Commands arrive keyed by
//! order and are repartitioned by SKU, so however many instances run, one reacts for a
//! given SKU at a time, in order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use apache_avro::AvroSchema;
use chrono::{DateTime, Utc};
use herald_bus::Event;
use herald_choreography::declaration::Output;
use herald_choreography::{Inputs, Participant, Reaction, StateKey};
use serde::{Deserialize, Serialize};

use super::{forget_before, Closed, REMEMBER_ORDERS_FOR};
use crate::inventory::{ReleaseSku, ReserveSku, SkuReserved, SkuShort, StockCommand, STOCK_COMMANDS, STOCK_REPLIES};

/// The stock participant. `seed` is the stock of a SKU the first time it is seen (a SKU
/// not in it has 0); after that the changelog is the truth.
#[derive(Debug, Clone)]
pub struct Stock {
    /// Initial units per SKU.
    pub seed: HashMap<String, i64>,
    /// How long a SKU remembers an order after it last changed it (default
    /// [`REMEMBER_ORDERS_FOR`]).
    pub remember: Duration,
}

impl Stock {
    /// Stock seeded from `seed`, remembering orders for [`REMEMBER_ORDERS_FOR`].
    pub fn new(seed: HashMap<String, i64>) -> Self {
        Stock { seed, remember: REMEMBER_ORDERS_FOR }
    }
}

impl Default for Stock {
    fn default() -> Self {
        Stock::new(HashMap::new())
    }
}

/// Units of a SKU held for one order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.stock")]
pub struct Hold {
    /// The order.
    pub order_id: String,
    /// Units held.
    pub quantity: i64,
    /// When they were held, epoch milliseconds.
    pub at_ms: i64,
}

/// The stock of one SKU.
///
/// `held` keeps sold orders' holds and `closed` the released or refused orders: that is
/// what makes duplicates and late commands harmless. Both forget an order
/// [`Stock::remember`] after it last changed them (its units stay sold), so the state
/// holds the orders of that window, not the SKU's whole history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.stock")]
pub struct SkuStock {
    /// Units free to reserve.
    pub available: i64,
    /// Units held per order.
    pub held: Vec<Hold>,
    /// Orders this SKU will never reserve for (released, or refused).
    pub closed: Vec<Closed>,
}

impl SkuStock {
    fn knows(&self, order_id: &str) -> bool {
        self.held.iter().any(|h| h.order_id == order_id) || self.closed.iter().any(|o| o.order_id == order_id)
    }

    /// This stock without the orders it last changed for before `before` (epoch ms).
    fn forgetting(&self, before: i64) -> Cow<'_, SkuStock> {
        if self.held.iter().all(|h| h.at_ms >= before) && self.closed.iter().all(|c| c.at_ms >= before) {
            return Cow::Borrowed(self);
        }
        let mut next = self.clone();
        next.held.retain(|h| h.at_ms >= before);
        next.closed.retain(|c| c.at_ms >= before);
        Cow::Owned(next)
    }

    fn reserve(&self, c: ReserveSku, now_ms: i64) -> Reaction<SkuStock> {
        if self.knows(&c.order_id) {
            return Reaction::keep();
        }
        let mut next = self.clone();
        if c.quantity < 0 || c.quantity > self.available {
            next.closed.push(Closed { order_id: c.order_id.clone(), at_ms: now_ms });
            let short = SkuShort { order_id: c.order_id, sku: c.sku, requested: c.quantity, available: self.available };
            return Reaction::with_state(next).emit(&STOCK_REPLIES, short);
        }
        next.available -= c.quantity;
        next.held.push(Hold { order_id: c.order_id.clone(), quantity: c.quantity, at_ms: now_ms });
        Reaction::with_state(next).emit(&STOCK_REPLIES, SkuReserved { order_id: c.order_id, sku: c.sku, quantity: c.quantity })
    }

    fn release(&self, c: ReleaseSku, now_ms: i64) -> Reaction<SkuStock> {
        let mut next = self.clone();
        if let Some(index) = next.held.iter().position(|h| h.order_id == c.order_id) {
            let hold = next.held.remove(index);
            next.available = next.available.saturating_add(hold.quantity);
        } else if next.closed.iter().any(|o| o.order_id == c.order_id) {
            return Reaction::keep();
        }
        next.closed.push(Closed { order_id: c.order_id, at_ms: now_ms });
        Reaction::with_state(next)
    }
}

impl Participant for Stock {
    const NAME: &'static str = "inventory-stock";
    type Input = StockCommand;
    type State = SkuStock;

    fn inputs(&self) -> Inputs<StockCommand> {
        Inputs::new().on_keyed(&STOCK_COMMANDS, StateKey::by("sku", |c: &StockCommand| c.sku().to_owned()), |c| c)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<SkuReserved, _>(&STOCK_REPLIES).after(&[ReserveSku::TYPE]).step(), Output::of::<SkuShort, _>(&STOCK_REPLIES).after(&[ReserveSku::TYPE])]
    }

    fn initial(&self, sku: &str) -> SkuStock {
        SkuStock { available: self.seed.get(sku).copied().unwrap_or(0), ..SkuStock::default() }
    }

    fn decide(&self, stock: &SkuStock, command: StockCommand, now: DateTime<Utc>) -> Reaction<SkuStock> {
        let stock = stock.forgetting(forget_before(now, self.remember));
        match command {
            StockCommand::Reserve(c) => stock.reserve(c, now.timestamp_millis()),
            StockCommand::Release(c) => stock.release(c, now.timestamp_millis()),
        }
    }
}
