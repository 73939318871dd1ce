//! Every rule of the reference saga, with the choreography test kit: one participant at a
//! time ([`Scenario`]), then all five together ([`World`]) with the invariants of issue 8
//! checked from the events alone.

mod declared;
mod inventory;
mod orders_role;
mod payments;
mod together;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_bus::timestamp::TimestampMillis;
use herald_choreography::testkit::{start_time, Scenario, World};

use super::orders::{self, cancelled, OrderPhase, OUT_OF_STOCK, PAYMENT_DECLINED, PAYMENT_TIMEOUT, TIMEOUT};
use super::reservations::ReservationPhase;
use super::{Billing, Credit, Orders, Reservations, Stock};
use crate::inventory::{ReleaseSku, ReserveSku, SkuReserved, SkuShort, StockLine, StockRejected, StockReleased, StockReserved, INVENTORY, STOCK_COMMANDS, STOCK_REPLIES};
use crate::orders::{OrderCancelled, OrderConfirmed, OrderLine, OrderPlaced, ORDERS};
use crate::payments::{ChargeCredit, PaymentCharged, PaymentDeclined, PaymentRefunded, RefundCredit, CREDIT_COMMANDS, PAYMENTS};

// ---------------------------------------------------------------------------------------
// Builders (constructors and field access only, so new fields on the order events do not
// break these tests).

fn line(sku: &str, quantity: i32, unit_price_cents: i64) -> OrderLine {
    let mut line = OrderPlaced::example("x", "x", unit_price_cents).lines.remove(0);
    line.sku = sku.to_owned();
    line.quantity = quantity;
    line.unit_price_cents = unit_price_cents;
    line
}

/// An order of `lines` (sku, quantity) at 100 cents a unit.
fn order(order_id: &str, customer_id: &str, lines: &[(&str, i32)]) -> OrderPlaced {
    let lines: Vec<OrderLine> = lines.iter().map(|(sku, q)| line(sku, *q, 100)).collect();
    let total = lines.iter().map(|l| l.unit_price_cents * i64::from(l.quantity)).sum();
    OrderPlaced { lines, ..OrderPlaced::example(order_id, customer_id, total) }
}

fn stock_line(sku: &str, quantity: i64) -> StockLine {
    StockLine { sku: sku.into(), quantity }
}

fn reserved(order_id: &str, customer_id: &str, total_cents: i64, lines: &[(&str, i64)]) -> StockReserved {
    StockReserved { order_id: order_id.into(), customer_id: customer_id.into(), total_cents, lines: lines.iter().map(|(s, q)| stock_line(s, *q)).collect() }
}

fn charged(order_id: &str, customer_id: &str, amount_cents: i64) -> PaymentCharged {
    PaymentCharged { order_id: order_id.into(), customer_id: customer_id.into(), payment_id: crate::saga::credit::payment_id(order_id), amount_cents }
}

fn declined(order_id: &str, customer_id: &str, reason: &str) -> PaymentDeclined {
    PaymentDeclined { order_id: order_id.into(), customer_id: customer_id.into(), reason: reason.into() }
}

fn rejected(order_id: &str, sku: &str, requested: i64, available: i64) -> StockRejected {
    StockRejected { order_id: order_id.into(), sku: sku.into(), requested, available }
}

/// The system's `OrderConfirmed` of `order_id`, confirmed at `at`.
fn confirmed_of(order_id: &str, at: DateTime<Utc>) -> OrderConfirmed {
    orders::confirmed(&charged(order_id, "c", 0), at)
}

fn release_sku(order_id: &str, sku: &str) -> ReleaseSku {
    ReleaseSku { order_id: order_id.into(), sku: sku.into() }
}

fn sku_reserved(order_id: &str, sku: &str, quantity: i64) -> SkuReserved {
    SkuReserved { order_id: order_id.into(), sku: sku.into(), quantity }
}

fn sku_short(order_id: &str, sku: &str, requested: i64, available: i64) -> SkuShort {
    SkuShort { order_id: order_id.into(), sku: sku.into(), requested, available }
}

fn reserve_sku(order_id: &str, sku: &str, quantity: i64) -> ReserveSku {
    ReserveSku { order_id: order_id.into(), sku: sku.into(), quantity }
}

fn charge(order_id: &str, customer_id: &str, amount_cents: i64) -> ChargeCredit {
    ChargeCredit { order_id: order_id.into(), customer_id: customer_id.into(), amount_cents }
}

fn refund(order_id: &str, customer_id: &str) -> RefundCredit {
    RefundCredit { order_id: order_id.into(), customer_id: customer_id.into() }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn stock(seed: &[(&str, i64)]) -> Stock {
    Stock::new(seed.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect())
}

