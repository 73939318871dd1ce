//! What the demo sends, and what it therefore expects: the stock file, the credit file and
//! the orders, each with the outcome the files imply.
//!
//! - Twenty SKUs with far more stock than any run asks, and `SKU-SOLD-OUT` with none: an
//!   order with a line of it is cancelled `out-of-stock` (its other SKUs, reserved on their
//!   own, are released).
//! - Customers `customer-NN` with the default credit, far more than they spend; customers
//!   `customer-broke-N` with 1.00 EUR of credit in the credit file, less than any order:
//!   their orders (all in stock) are cancelled `payment-declined`.
//! - Orders placed while the payments process is frozen (SIGSTOP) would be confirmed, but
//!   no payment outcome comes within the payment timeout: cancelled `timeout`.
//!
//! Every order of the first phase is one of the first three kinds, by its number (every
//! tenth from the fourth out of stock, every tenth from the eighth declined); the frozen
//! phase's orders are of the first kind.

use std::collections::BTreeMap;

use herald_shop::{OrderLine, OrderPlaced};
use serde::{Deserialize, Serialize};

/// The SKU with no stock.
pub const SOLD_OUT: &str = "SKU-SOLD-OUT";
/// Units of every other SKU.
pub const AMPLE_STOCK: i64 = 1_000_000;
/// Credit of a broke customer, in cents (every order totals more).
pub const BROKE_CREDIT: i64 = 100;
/// Credit of the other customers, in cents (`--default-credit`).
pub const DEFAULT_CREDIT: i64 = 100_000_000;
const SKUS: usize = 20;
const CUSTOMERS: usize = 40;
const BROKE: usize = 5;

/// An order's expected outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// `confirmed`.
    Confirmed,
    /// `cancelled: out-of-stock`.
    OutOfStock,
    /// `cancelled: payment-declined`.
    Declined,
    /// `cancelled: timeout`.
    Timeout,
}

impl Expect {
    /// Every outcome, in the table's order.
    pub const ALL: [Expect; 4] = [Expect::Confirmed, Expect::OutOfStock, Expect::Declined, Expect::Timeout];

    /// The outcome as the order-status view labels it (`OrderStatusRow::outcome`).
    pub fn label(self) -> &'static str {
        match self {
            Expect::Confirmed => "confirmed",
            Expect::OutOfStock => "cancelled: out-of-stock",
            Expect::Declined => "cancelled: payment-declined",
            Expect::Timeout => "cancelled: timeout",
        }
    }
}

/// One order of the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Planned {
    /// What is sent.
    pub order: OrderPlaced,
    /// What the files imply.
    pub expect: Expect,
    /// Sent while payments was frozen.
    pub frozen: bool,
}

/// The stock file's content.
pub fn stock() -> BTreeMap<String, i64> {
    let mut stock: BTreeMap<String, i64> = (1..=SKUS).map(|n| (sku(n), AMPLE_STOCK)).collect();
    stock.insert(SOLD_OUT.to_owned(), 0);
    stock
}

/// The credit file's content (customers not in it have [`DEFAULT_CREDIT`]).
pub fn credit() -> BTreeMap<String, i64> {
    (1..=BROKE).map(|n| (format!("customer-broke-{n}"), BROKE_CREDIT)).collect()
}

fn sku(n: usize) -> String {
    format!("SKU-{n:02}")
}

/// `normal` orders of the first phase, then `frozen` orders for the frozen phase; order ids
/// `order-RUN-N`.
pub fn orders(run: &str, normal: usize, frozen: usize) -> Vec<Planned> {
    let mut planned = Vec::with_capacity(normal + frozen);
    for i in 0..normal + frozen {
        let is_frozen = i >= normal;
        let expect = match (is_frozen, i % 10) {
            (true, _) => Expect::Timeout,
            (false, 3) => Expect::OutOfStock,
            (false, 7) => Expect::Declined,
            _ => Expect::Confirmed,
        };
        let mut lines: Vec<OrderLine> = (0..1 + i % 3)
            .map(|j| OrderLine { sku: sku((i * 7 + j * 3) % SKUS + 1), quantity: i32::try_from(1 + (i + j) % 3).unwrap_or(1), unit_price_cents: 500 + ((i * 37 + j * 91) % 4500) as i64 })
            .collect();
        if expect == Expect::OutOfStock {
            lines.push(OrderLine { sku: SOLD_OUT.to_owned(), quantity: 1, unit_price_cents: 1999 });
        }
        let customer = match expect {
            Expect::Declined => format!("customer-broke-{}", i % BROKE + 1),
            _ => format!("customer-{:02}", i % CUSTOMERS + 1),
        };
        let total_cents = lines.iter().map(|l| l.unit_price_cents * i64::from(l.quantity)).sum();
        let order = OrderPlaced {
            order_id: format!("order-{run}-{i:04}"),
            customer_id: customer,
            total_cents,
            currency: "EUR".to_owned(),
            lines,
            note: None,
            placed_at: None,
        };
        planned.push(Planned { order, expect, frozen: is_frozen });
    }
    planned
}

/// How many orders of `planned` expect each outcome.
pub fn expected_counts(planned: &[Planned]) -> BTreeMap<Expect, usize> {
    let mut counts: BTreeMap<Expect, usize> = Expect::ALL.iter().map(|e| (*e, 0)).collect();
    for p in planned {
        *counts.entry(p.expect).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_imply_each_planned_outcome() {
        let (stock, credit) = (stock(), credit());
        let planned = orders("t", 100, 5);
        for p in &planned {
            let short = p.order.lines.iter().any(|l| stock.get(&l.sku).copied().unwrap_or(0) < i64::from(l.quantity));
            let funds = credit.get(&p.order.customer_id).copied().unwrap_or(DEFAULT_CREDIT);
            let implied = if short {
                Expect::OutOfStock
            } else if p.order.total_cents > funds {
                Expect::Declined
            } else if p.frozen {
                Expect::Timeout
            } else {
                Expect::Confirmed
            };
            assert_eq!(implied, p.expect, "{:?}", p.order);
            assert!(p.order.total_cents > BROKE_CREDIT);
        }
        let counts = expected_counts(&planned);
        assert_eq!(counts[&Expect::OutOfStock], 10);
        assert_eq!(counts[&Expect::Declined], 10);
        assert_eq!(counts[&Expect::Timeout], 5);
        assert_eq!(counts[&Expect::Confirmed], 80);
        // Nobody who should be confirmed runs out of credit, whatever the run's size.
        let spend = orders("t", 2000, 0).iter().filter(|p| p.expect == Expect::Confirmed).map(|p| p.order.total_cents).sum::<i64>();
        assert!(spend < DEFAULT_CREDIT);
    }
}
