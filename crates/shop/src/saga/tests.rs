//! Every rule of the reference saga, with the choreography test kit: one participant at a
//! time ([`Scenario`]), then all five together ([`World`]) with the invariants of issue 8
//! checked from the events alone.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use herald_choreography::testkit::{Scenario, World};

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
    PaymentCharged { order_id: order_id.into(), customer_id: customer_id.into(), payment_id: super::credit::payment_id(order_id), amount_cents }
}

fn declined(order_id: &str, customer_id: &str, reason: &str) -> PaymentDeclined {
    PaymentDeclined { order_id: order_id.into(), customer_id: customer_id.into(), reason: reason.into() }
}

fn rejected(order_id: &str, sku: &str, requested: i64, available: i64) -> StockRejected {
    StockRejected { order_id: order_id.into(), sku: sku.into(), requested, available }
}

fn confirmed_of(order_id: &str) -> OrderConfirmed {
    orders::confirmed(&charged(order_id, "c", 0))
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

// ---------------------------------------------------------------------------------------
// The saga as declared.

#[test]
fn the_saga_passes_its_static_check() {
    let report = super::check();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn stock_and_credit_are_repartitioned_and_the_rest_is_not() {
    let declarations = super::declarations();
    let repartitions: Vec<(String, Option<String>)> = declarations.iter().flat_map(|d| d.consumes.iter().map(move |c| (d.name.clone(), d.repartition_topic(&c.topic)))).filter(|(_, r)| r.is_some()).collect();
    assert_eq!(
        repartitions,
        [
            ("inventory-stock".to_owned(), Some("inventory-stock.shop.inventory.commands.by-sku".to_owned())),
            ("payments-credit".to_owned(), Some("payments-credit.shop.payments.commands.by-customer_id".to_owned())),
        ]
    );
    let mermaid = super::diagram();
    for expected in ["repartition by sku", "repartition by customer_id", "StockReleased (undoes StockReserved)", "p_orders == \"OrderCancelled\" ==> t_shop_orders", "deadline: OrderCancelled"] {
        assert!(mermaid.contains(expected), "{expected:?} missing from\n{mermaid}");
    }
}

#[test]
fn participant_states_survive_the_changelog() {
    use herald_choreography::changelog::check_state;
    let mut r = Scenario::new(Reservations);
    r.when(&ORDERS, order("o-1", "c-1", &[("A", 1), ("B", 2)])).when(&STOCK_REPLIES, sku_reserved("o-1", "A", 1));
    check_state(r.state("o-1").clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut s = Scenario::new(Stock::new(HashMap::from([("A".to_owned(), 3)])));
    s.when(&STOCK_COMMANDS, reserve_sku("o-1", "A", 1)).when(&STOCK_COMMANDS, reserve_sku("o-2", "A", 9));
    check_state(s.state("A").clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Scenario::new(Credit::default());
    c.when(&CREDIT_COMMANDS, charge("o-1", "c-1", 5)).when(&CREDIT_COMMANDS, refund("o-2", "c-1"));
    check_state(c.state("c-1").clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut o = Scenario::new(Orders::default());
    o.when(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    check_state(o.state("o-1").clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut b = Scenario::new(Billing);
    b.when(&INVENTORY, reserved("o-1", "c-1", 5, &[]));
    check_state(b.state("o-1").clone()).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------
// Rule 3: orders.

#[test]
fn orders_confirms_a_charged_order_once_and_stops_its_timeout() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)])).then_emitted_nothing();
    assert_eq!(t.deadline("o-1", PAYMENT_TIMEOUT).map(|d| d.at), Some(t.now() + chrono::Duration::seconds(30)));
    t.when(&PAYMENTS, charged("o-1", "c-1", 100)).then_emitted(&ORDERS, &confirmed_of("o-1")).then_emitted_count(1);
    assert!(t.deadlines("o-1").is_empty() && t.is_finished("o-1"));
    assert_eq!(t.state("o-1").phase, OrderPhase::Confirmed);
    t.redeliver().then_emitted_nothing();
    t.when(&PAYMENTS, declined("o-1", "c-1", "insufficient-credit")).then_emitted_nothing();
    t.when(&INVENTORY, rejected("o-1", "A", 1, 0)).then_emitted_nothing();
    t.advance(secs(3600)).then_emitted_nothing();
}

#[test]
fn orders_cancels_when_stock_is_short() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    t.when(&INVENTORY, rejected("o-1", "A", 1, 0)).then_emitted(&ORDERS, &cancelled("o-1", OUT_OF_STOCK)).then_emitted_count(1);
    let sent = t.emitted_events::<OrderCancelled>();
    assert_eq!((sent[0].reason.as_str(), sent[0].cancelled_by.as_deref()), ("out-of-stock", Some("system")));
    t.when(&PAYMENTS, charged("o-1", "c-1", 100)).then_emitted_nothing();
    t.advance(secs(60)).then_emitted_nothing();
}

#[test]
fn orders_cancels_when_payment_is_declined() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    t.when(&PAYMENTS, declined("o-1", "c-1", "insufficient-credit")).then_emitted(&ORDERS, &cancelled("o-1", PAYMENT_DECLINED)).then_emitted_count(1);
    t.advance(secs(60)).then_emitted_nothing();
}

#[test]
fn orders_times_out_exactly_at_the_timeout_and_ignores_late_outcomes() {
    let mut t = Scenario::new(Orders { payment_timeout: secs(5) });
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    t.advance(Duration::from_millis(4_999)).then_emitted_nothing();
    t.advance(Duration::from_millis(1)).then_emitted(&ORDERS, &cancelled("o-1", TIMEOUT)).then_emitted_count(1);
    assert!(t.is_finished("o-1"));
    t.when(&PAYMENTS, charged("o-1", "c-1", 100)).then_emitted_nothing();
    t.when(&ORDERS, order("o-1", "c-1", &[("A", 1)])).then_emitted_nothing();
    assert!(t.deadlines("o-1").is_empty(), "a duplicate OrderPlaced does not restart the timeout");
    t.advance(secs(60)).then_emitted_nothing();
}

#[test]
fn orders_ignores_duplicates_and_its_own_terminal_events() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    let first = t.deadline("o-1", PAYMENT_TIMEOUT).cloned();
    t.advance(secs(10));
    t.when(&ORDERS, order("o-1", "c-1", &[("A", 1)])).then_emitted_nothing();
    assert_eq!(t.deadline("o-1", PAYMENT_TIMEOUT).cloned(), first, "a duplicate does not move the timeout");
    t.when(&PAYMENTS, charged("o-1", "c-1", 100)).then_emitted_count(1);
    t.when(&ORDERS, confirmed_of("o-1")).then_emitted_nothing();
}

#[test]
fn orders_treats_a_customer_cancellation_as_the_end() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    let by_customer = OrderCancelled { cancelled_by: Some("customer".into()), ..cancelled("o-1", "changed their mind") };
    t.when(&ORDERS, by_customer).then_emitted_nothing();
    assert!(t.deadlines("o-1").is_empty());
    t.when(&PAYMENTS, charged("o-1", "c-1", 100)).then_emitted_nothing();
    t.advance(secs(60)).then_emitted_nothing();
}

#[test]
fn orders_keeps_each_orders_timeout_apart() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    t.advance(secs(20));
    t.given(&ORDERS, order("o-2", "c-1", &[("A", 1)]));
    t.advance(secs(10)).then_emitted(&ORDERS, &cancelled("o-1", TIMEOUT)).then_emitted_count(1);
    t.advance(secs(20)).then_emitted(&ORDERS, &cancelled("o-2", TIMEOUT)).then_emitted_count(1);
}

// ---------------------------------------------------------------------------------------
// Rule 1: inventory, per order.

#[test]
fn reservations_ask_each_sku_once_with_its_lines_summed() {
    let mut t = Scenario::new(Reservations);
    t.when(&ORDERS, order("o-1", "c-1", &[("B", 1), ("A", 2), ("B", 3)]));
    t.then_emitted(&STOCK_COMMANDS, &reserve_sku("o-1", "A", 2)).then_emitted(&STOCK_COMMANDS, &reserve_sku("o-1", "B", 4)).then_emitted_count(2);
    t.redeliver().then_emitted_nothing();
    t.when(&ORDERS, order("o-1", "c-1", &[("B", 1), ("A", 2), ("B", 3)])).then_emitted_nothing();
}

#[test]
fn reservations_publish_stock_reserved_when_every_sku_reserved() {
    let mut t = Scenario::new(Reservations);
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 2), ("B", 1)]));
    t.when(&STOCK_REPLIES, sku_reserved("o-1", "B", 1)).then_emitted_nothing();
    t.when(&STOCK_REPLIES, sku_reserved("o-1", "B", 1)).then_emitted_nothing();
    t.when(&STOCK_REPLIES, sku_reserved("o-1", "A", 2)).then_emitted(&INVENTORY, &reserved("o-1", "c-1", 300, &[("A", 2), ("B", 1)])).then_emitted_count(1);
    t.redeliver().then_emitted_nothing();
    assert_eq!(t.state("o-1").phase, ReservationPhase::Reserved);
    t.when(&ORDERS, confirmed_of("o-1")).then_emitted_nothing();
    assert_eq!(t.state("o-1").phase, ReservationPhase::Sold);
    assert!(t.is_finished("o-1"));
}

#[test]
fn reservations_reject_at_the_first_short_sku_and_release_the_partial_reservations() {
    let mut t = Scenario::new(Reservations);
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 2), ("B", 1), ("C", 5)]));
    t.given(&STOCK_REPLIES, sku_reserved("o-1", "A", 2));
    t.when(&STOCK_REPLIES, sku_short("o-1", "C", 5, 1));
    t.then_emitted(&INVENTORY, &rejected("o-1", "C", 5, 1)).then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "A")).then_emitted_count(2);
    // B answers late: released on arrival, never reported as reserved.
    t.when(&STOCK_REPLIES, sku_reserved("o-1", "B", 1)).then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "B")).then_emitted_count(1);
    t.redeliver().then_emitted_nothing();
    t.when(&ORDERS, cancelled("o-1", OUT_OF_STOCK)).then_emitted_nothing();
    assert_eq!(t.state("o-1").phase, ReservationPhase::Rejected);
    assert!(t.state("o-1").held.is_empty());
}

#[test]
fn reservations_release_once_when_a_reserved_order_is_cancelled() {
    let mut t = Scenario::new(Reservations);
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 2), ("B", 1)]));
    t.given(&STOCK_REPLIES, sku_reserved("o-1", "A", 2)).given(&STOCK_REPLIES, sku_reserved("o-1", "B", 1));
    t.when(&ORDERS, cancelled("o-1", PAYMENT_DECLINED));
    t.then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "A")).then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "B"));
    t.then_emitted(&INVENTORY, &StockReleased { order_id: "o-1".into(), lines: vec![stock_line("A", 2), stock_line("B", 1)] }).then_emitted_count(3);
    t.redeliver().then_emitted_nothing();
    t.when(&ORDERS, cancelled("o-1", TIMEOUT)).then_emitted_nothing();
    assert_eq!(t.state("o-1").phase, ReservationPhase::Released);
}

#[test]
fn reservations_cancelled_while_pending_release_what_they_hold_and_what_comes_later() {
    let mut t = Scenario::new(Reservations);
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 2), ("B", 1)]));
    t.given(&STOCK_REPLIES, sku_reserved("o-1", "A", 2));
    t.when(&ORDERS, cancelled("o-1", TIMEOUT)).then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "A")).then_emitted_count(1);
    t.when(&STOCK_REPLIES, sku_reserved("o-1", "B", 1)).then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "B")).then_emitted_count(1);
    assert_eq!(t.emitted_events::<StockReserved>().len(), 0);
    assert_eq!(t.state("o-1").phase, ReservationPhase::Cancelled);
}

#[test]
fn reservations_of_an_order_cancelled_before_it_was_placed_never_start() {
    let mut t = Scenario::new(Reservations);
    t.when(&ORDERS, cancelled("o-1", TIMEOUT)).then_emitted_nothing();
    t.when(&ORDERS, order("o-1", "c-1", &[("A", 1)])).then_emitted_nothing();
}

#[test]
fn an_order_without_lines_is_reserved_at_once() {
    let mut t = Scenario::new(Reservations);
    t.when(&ORDERS, order("o-1", "c-1", &[])).then_emitted(&INVENTORY, &reserved("o-1", "c-1", 0, &[])).then_emitted_count(1);
}

// ---------------------------------------------------------------------------------------
// Rule 1: inventory, per SKU.

fn stock(seed: &[(&str, i64)]) -> Stock {
    Stock::new(seed.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect())
}

#[test]
fn stock_reserves_what_it_has_and_never_more() {
    let mut t = Scenario::new(stock(&[("A", 5)]));
    t.when(&STOCK_COMMANDS, reserve_sku("o-1", "A", 3)).then_emitted(&STOCK_REPLIES, &sku_reserved("o-1", "A", 3));
    t.when(&STOCK_COMMANDS, reserve_sku("o-2", "A", 3)).then_emitted(&STOCK_REPLIES, &sku_short("o-2", "A", 3, 2));
    t.when(&STOCK_COMMANDS, reserve_sku("o-3", "A", 2)).then_emitted(&STOCK_REPLIES, &sku_reserved("o-3", "A", 2));
    assert_eq!(t.state("A").available, 0);
    t.when(&STOCK_COMMANDS, reserve_sku("o-4", "UNKNOWN", 1)).then_emitted(&STOCK_REPLIES, &sku_short("o-4", "UNKNOWN", 1, 0));
    t.when(&STOCK_COMMANDS, reserve_sku("o-5", "A", -4)).then_emitted(&STOCK_REPLIES, &sku_short("o-5", "A", -4, 0));
    assert_eq!(t.state("A").available, 0, "a negative quantity adds nothing");
}

#[test]
fn stock_is_keyed_by_sku_across_orders() {
    let mut t = Scenario::new(stock(&[("A", 1), ("B", 1)]));
    t.when(&STOCK_COMMANDS, reserve_sku("o-1", "A", 1)).when(&STOCK_COMMANDS, reserve_sku("o-1", "B", 1)).when(&STOCK_COMMANDS, reserve_sku("o-2", "A", 1));
    t.then_emitted(&STOCK_REPLIES, &sku_short("o-2", "A", 1, 0));
    assert_eq!((t.state("A").available, t.state("B").available), (0, 0));
    assert!(t.slot("o-1").is_none(), "no state is keyed by order");
}

#[test]
fn stock_releases_once_and_never_reserves_a_released_order_again() {
    let mut t = Scenario::new(stock(&[("A", 5)]));
    t.given(&STOCK_COMMANDS, reserve_sku("o-1", "A", 3));
    t.when(&STOCK_COMMANDS, reserve_sku("o-1", "A", 3)).then_emitted_nothing();
    t.when(&STOCK_COMMANDS, release_sku("o-1", "A")).then_emitted_nothing();
    assert_eq!(t.state("A").available, 5);
    t.when(&STOCK_COMMANDS, release_sku("o-1", "A")).then_emitted_nothing();
    assert_eq!(t.state("A").available, 5, "released once");
    t.when(&STOCK_COMMANDS, reserve_sku("o-1", "A", 3)).then_emitted_nothing();
    assert_eq!(t.state("A").available, 5);
    // A release that overtakes its reservation closes the order for this SKU.
    t.when(&STOCK_COMMANDS, release_sku("o-2", "A")).when(&STOCK_COMMANDS, reserve_sku("o-2", "A", 1)).then_emitted_nothing();
    assert_eq!(t.state("A").available, 5);
}

// ---------------------------------------------------------------------------------------
// Rule 2: payments, per order.

#[test]
fn billing_asks_one_charge_per_reserved_order() {
    let mut t = Scenario::new(Billing);
    t.when(&INVENTORY, reserved("o-1", "c-1", 250, &[("A", 1)])).then_emitted(&CREDIT_COMMANDS, &charge("o-1", "c-1", 250)).then_emitted_count(1);
    t.redeliver().then_emitted_nothing();
    t.when(&INVENTORY, reserved("o-1", "c-1", 250, &[("A", 1)])).then_emitted_nothing();
    t.when(&ORDERS, confirmed_of("o-1")).then_emitted_nothing();
    t.when(&ORDERS, cancelled("o-1", TIMEOUT)).then_emitted_nothing();
}

#[test]
fn billing_never_charges_an_order_it_has_seen_cancelled() {
    let mut t = Scenario::new(Billing);
    t.when(&ORDERS, cancelled("o-1", TIMEOUT)).then_emitted_nothing();
    t.when(&INVENTORY, reserved("o-1", "c-1", 250, &[("A", 1)])).then_emitted_nothing();
}

#[test]
fn billing_asks_a_refund_once_when_a_charged_order_is_cancelled() {
    let mut t = Scenario::new(Billing);
    t.given(&INVENTORY, reserved("o-1", "c-1", 250, &[("A", 1)]));
    t.when(&ORDERS, cancelled("o-1", TIMEOUT)).then_emitted(&CREDIT_COMMANDS, &refund("o-1", "c-1")).then_emitted_count(1);
    t.redeliver().then_emitted_nothing();
    t.when(&ORDERS, cancelled("o-1", TIMEOUT)).then_emitted_nothing();
}

// ---------------------------------------------------------------------------------------
// Rule 2: payments, per customer.

#[test]
fn credit_charges_what_is_left_and_declines_the_rest() {
    let mut t = Scenario::new(Credit { credit: HashMap::from([("c-1".to_owned(), 1_000)]), default_credit: 50 });
    t.when(&CREDIT_COMMANDS, charge("o-1", "c-1", 600)).then_emitted(&PAYMENTS, &charged("o-1", "c-1", 600));
    t.when(&CREDIT_COMMANDS, charge("o-2", "c-1", 500)).then_emitted(&PAYMENTS, &declined("o-2", "c-1", "insufficient-credit"));
    t.when(&CREDIT_COMMANDS, charge("o-3", "c-1", 400)).then_emitted(&PAYMENTS, &charged("o-3", "c-1", 400));
    assert_eq!(t.state("c-1").remaining, 0);
    t.when(&CREDIT_COMMANDS, charge("o-4", "c-2", 51)).then_emitted(&PAYMENTS, &declined("o-4", "c-2", "insufficient-credit"));
    t.when(&CREDIT_COMMANDS, charge("o-5", "c-2", 50)).then_emitted(&PAYMENTS, &charged("o-5", "c-2", 50));
    t.when(&CREDIT_COMMANDS, charge("o-6", "c-3", -1)).then_emitted(&PAYMENTS, &declined("o-6", "c-3", "invalid-amount"));
    assert_eq!(t.state("c-3").remaining, 50, "the default credit, untouched");
}

#[test]
fn the_default_credit_is_a_thousand_euros() {
    let mut t = Scenario::new(Credit::default());
    t.when(&CREDIT_COMMANDS, charge("o-1", "c-9", 100_000)).then_emitted(&PAYMENTS, &charged("o-1", "c-9", 100_000));
    t.when(&CREDIT_COMMANDS, charge("o-2", "c-9", 1)).then_emitted(&PAYMENTS, &declined("o-2", "c-9", "insufficient-credit"));
}

#[test]
fn credit_refunds_once_and_duplicates_change_nothing() {
    let mut t = Scenario::new(Credit::default());
    t.given(&CREDIT_COMMANDS, charge("o-1", "c-1", 700));
    t.when(&CREDIT_COMMANDS, charge("o-1", "c-1", 700)).then_emitted_nothing();
    t.when(&CREDIT_COMMANDS, refund("o-1", "c-1")).then_emitted(&PAYMENTS, &PaymentRefunded { order_id: "o-1".into(), customer_id: "c-1".into(), payment_id: "pay-o-1".into(), amount_cents: 700 });
    assert_eq!(t.state("c-1").remaining, 100_000);
    t.redeliver().then_emitted_nothing();
    t.when(&CREDIT_COMMANDS, refund("o-1", "c-1")).then_emitted_nothing();
    t.when(&CREDIT_COMMANDS, charge("o-1", "c-1", 700)).then_emitted_nothing();
    assert_eq!(t.state("c-1").remaining, 100_000);
}

#[test]
fn credit_never_charges_an_order_whose_cancellation_it_saw_first() {
    let mut t = Scenario::new(Credit::default());
    t.when(&CREDIT_COMMANDS, refund("o-1", "c-1")).then_emitted_nothing();
    t.when(&CREDIT_COMMANDS, charge("o-1", "c-1", 700)).then_emitted_nothing();
    assert_eq!(t.state("c-1").remaining, 100_000);
}

// ---------------------------------------------------------------------------------------
// All five together, with the invariants checked from the events alone.

fn world(stock_seed: &[(&str, i64)], credit: &[(&str, i64)], timeout: Duration) -> World {
    World::new()
        .with(Orders { payment_timeout: timeout })
        .with(Reservations)
        .with(stock(stock_seed))
        .with(Billing)
        .with(Credit { credit: credit.iter().map(|(c, v)| ((*c).to_owned(), *v)).collect(), default_credit: super::credit::DEFAULT_CREDIT })
}

/// The invariants of issue 8 section 2, from the public events only: exactly one terminal
/// event per placed order; a confirmed order holds one reservation and one charge; a
/// cancelled order's reservations and charges are all released and refunded; no SKU sold
/// beyond its stock, no customer charged beyond their credit.
fn assert_invariants(world: &World, stock_seed: &[(&str, i64)], credit_of: impl Fn(&str) -> i64) {
    let count = |v: Vec<String>| v.into_iter().fold(BTreeMap::<String, i64>::new(), |mut m, o| {
        *m.entry(o).or_default() += 1;
        m
    });
    let placed = world.events::<OrderPlaced>();
    let confirmed = count(world.events::<OrderConfirmed>().into_iter().map(|e| e.order_id).collect());
    let cancelled = count(world.events::<OrderCancelled>().into_iter().map(|e| e.order_id).collect());
    let reserved = count(world.events::<StockReserved>().into_iter().map(|e| e.order_id).collect());
    let released = count(world.events::<StockReleased>().into_iter().map(|e| e.order_id).collect());
    let charges = count(world.events::<PaymentCharged>().into_iter().map(|e| e.order_id).collect());
    let refunds = count(world.events::<PaymentRefunded>().into_iter().map(|e| e.order_id).collect());
    let n = |m: &BTreeMap<String, i64>, o: &str| m.get(o).copied().unwrap_or(0);
    for p in &placed {
        let o = p.order_id.as_str();
        assert_eq!(n(&confirmed, o) + n(&cancelled, o), 1, "{o}: exactly one terminal event");
        assert!(n(&reserved, o) <= 1 && n(&released, o) <= 1 && n(&charges, o) <= 1 && n(&refunds, o) <= 1, "{o}: nothing twice");
        if n(&confirmed, o) == 1 {
            assert_eq!((n(&reserved, o), n(&charges, o), n(&released, o), n(&refunds, o)), (1, 1, 0, 0), "{o}: confirmed holds one reservation and one charge");
        } else {
            assert_eq!(n(&reserved, o), n(&released, o), "{o}: cancelled, reservations released");
            assert_eq!(n(&charges, o), n(&refunds, o), "{o}: cancelled, charges refunded");
        }
    }
    // Net stock per SKU: what stays reserved never exceeds the seed.
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    for r in world.events::<StockReserved>() {
        r.lines.iter().for_each(|l| *net.entry(l.sku.clone()).or_default() += l.quantity);
    }
    for r in world.events::<StockReleased>() {
        r.lines.iter().for_each(|l| *net.entry(l.sku.clone()).or_default() -= l.quantity);
    }
    for (sku, taken) in &net {
        let seed = stock_seed.iter().find(|(s, _)| s == sku).map_or(0, |(_, q)| *q);
        assert!(*taken <= seed && *taken >= 0, "{sku}: {taken} taken of {seed}");
    }
    // Net charges per customer never exceed the credit, at any point of the log.
    let mut spent: BTreeMap<String, i64> = BTreeMap::new();
    for raw in world.log() {
        if let Some(c) = raw.decode::<PaymentCharged>() {
            let s = spent.entry(c.customer_id.clone()).or_default();
            *s += c.amount_cents;
            assert!(*s <= credit_of(&c.customer_id), "{}: charged {s} beyond credit", c.customer_id);
        }
        if let Some(r) = raw.decode::<PaymentRefunded>() {
            *spent.entry(r.customer_id).or_default() -= r.amount_cents;
        }
    }
}

#[test]
fn saga_confirmed() {
    let mut w = world(&[("A", 5), ("B", 5)], &[], secs(30));
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 2), ("B", 1)]));
    assert_eq!(w.events::<OrderConfirmed>(), [confirmed_of("o-1")]);
    assert_eq!(w.events::<StockReserved>(), [reserved("o-1", "c-1", 300, &[("A", 2), ("B", 1)])]);
    assert_eq!(w.events::<PaymentCharged>(), [charged("o-1", "c-1", 300)]);
    w.advance(secs(60));
    assert!(w.events::<OrderCancelled>().is_empty(), "the timeout was cancelled");
    assert_invariants(&w, &[("A", 5), ("B", 5)], |_| 100_000);
}

#[test]
fn saga_out_of_stock_releases_the_partial_reservations() {
    let seed = [("A", 5), ("B", 0)];
    let mut w = world(&seed, &[], secs(30));
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 5), ("B", 1)]));
    assert_eq!(w.events::<StockRejected>(), [rejected("o-1", "B", 1, 0)]);
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", OUT_OF_STOCK)]);
    assert_eq!(w.events::<ReleaseSku>(), [release_sku("o-1", "A")]);
    assert!(w.events::<PaymentCharged>().is_empty());
    // A's five units are back: the next order takes all of them.
    w.publish(&ORDERS, order("o-2", "c-2", &[("A", 5)]));
    assert_eq!(w.events::<OrderConfirmed>(), [confirmed_of("o-2")]);
    assert_invariants(&w, &seed, |_| 100_000);
}

#[test]
fn saga_payment_declined_releases_the_stock() {
    let seed = [("A", 1)];
    let mut w = world(&seed, &[("poor", 50)], secs(30));
    w.publish(&ORDERS, order("o-1", "poor", &[("A", 1)]));
    assert_eq!(w.events::<PaymentDeclined>(), [declined("o-1", "poor", "insufficient-credit")]);
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", PAYMENT_DECLINED)]);
    assert_eq!(w.events::<StockReleased>(), [StockReleased { order_id: "o-1".into(), lines: vec![stock_line("A", 1)] }]);
    w.publish(&ORDERS, order("o-2", "rich", &[("A", 1)]));
    assert_eq!(w.events::<OrderConfirmed>(), [confirmed_of("o-2")]);
    assert_invariants(&w, &seed, |c| if c == "poor" { 50 } else { 100_000 });
}

#[test]
fn saga_timeout_refunds_the_late_charge_and_releases_the_stock() {
    let seed = [("A", 3)];
    let mut w = world(&seed, &[], secs(30));
    w.pause("payments-credit");
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 3)]));
    assert_eq!(w.events::<StockReserved>().len(), 1);
    w.advance(secs(29));
    assert!(w.events::<OrderCancelled>().is_empty());
    w.advance(secs(1));
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", TIMEOUT)]);
    assert_eq!(w.events::<StockReleased>().len(), 1);
    // The credit comes back: the charge it was asked for lands late and is refunded.
    w.resume("payments-credit");
    assert_eq!(w.events::<PaymentCharged>(), [charged("o-1", "c-1", 300)]);
    assert_eq!(w.events::<PaymentRefunded>().len(), 1);
    assert!(w.events::<OrderConfirmed>().is_empty(), "the late charge confirms nothing");
    assert_invariants(&w, &seed, |_| 100_000);
}

#[test]
fn saga_timeout_while_inventory_is_down_never_charges() {
    let seed = [("A", 3)];
    let mut w = world(&seed, &[], secs(30));
    w.pause("inventory-stock");
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    w.advance(secs(30));
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", TIMEOUT)]);
    w.resume("inventory-stock");
    assert!(w.events::<StockReserved>().is_empty(), "reserved after the cancellation: released, never published");
    assert_eq!(w.events::<ReleaseSku>(), [release_sku("o-1", "A")]);
    assert!(w.events::<PaymentCharged>().is_empty());
    w.publish(&ORDERS, order("o-2", "c-1", &[("A", 3)]));
    assert_eq!(w.events::<OrderConfirmed>(), [confirmed_of("o-2")], "the late reservation was returned");
    assert_invariants(&w, &seed, |_| 100_000);
}

#[test]
fn saga_deadlines_due_while_orders_was_down_fire_when_it_returns() {
    let mut w = world(&[("A", 1)], &[], secs(30));
    w.pause("inventory-stock");
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    w.pause("orders");
    w.advance(secs(120));
    assert!(w.events::<OrderCancelled>().is_empty());
    w.resume("orders");
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", TIMEOUT)]);
    w.resume("inventory-stock");
    assert_invariants(&w, &[("A", 1)], |_| 100_000);
}

#[test]
fn saga_duplicates_of_every_event_change_nothing() {
    let seed = [("A", 2), ("B", 1)];
    let mut w = world(&seed, &[("c-2", 100)], secs(30));
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    w.publish(&ORDERS, order("o-2", "c-2", &[("A", 1), ("B", 1)]));
    w.publish(&ORDERS, order("o-3", "c-3", &[("B", 1)]));
    w.advance(secs(60));
    let before = w.log().len();
    for participant in ["orders", "inventory-reservations", "inventory-stock", "payments-billing", "payments-credit"] {
        for index in 0..before {
            w.redeliver_to(participant, index);
        }
    }
    w.advance(secs(60));
    assert_eq!(w.log().len(), before, "redelivering every event to every participant emits nothing");
    assert_invariants(&w, &seed, |c| if c == "c-2" { 100 } else { 100_000 });
}

#[test]
fn saga_many_orders_racing_for_scarce_stock_and_credit_keep_every_invariant() {
    let seed = [("A", 7), ("B", 4), ("C", 2)];
    let credit = |c: &str| if c == "c-0" { 1_000 } else { 700 };
    let mut w = World::new()
        .with(Orders { payment_timeout: secs(30) })
        .with(Reservations)
        .with(stock(&seed))
        .with(Billing)
        .with(Credit { credit: (0..4).map(|i| (format!("c-{i}"), credit(&format!("c-{i}")))).collect(), default_credit: 700 });
    let skus = ["A", "B", "C"];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    let roles = ["inventory-stock", "payments-credit", "inventory-reservations", "payments-billing"];
    for i in 0..60 {
        if next(5) == 0 {
            w.pause(roles[usize::try_from(next(4)).unwrap_or(0)]);
        }
        let lines: Vec<(&str, i32)> = (0..=next(2)).map(|_| (skus[usize::try_from(next(3)).unwrap_or(0)], i32::try_from(next(3) + 1).unwrap_or(1))).collect();
        w.publish(&ORDERS, order(&format!("o-{i}"), &format!("c-{}", next(4)), &lines));
        w.advance(Duration::from_secs(next(20)));
        if next(3) == 0 {
            for role in roles {
                w.resume(role);
            }
        }
    }
    for role in roles {
        w.resume(role);
    }
    w.advance(secs(60));
    assert_invariants(&w, &seed, credit);
    let outcomes = (w.events::<OrderConfirmed>().len(), w.events::<OrderCancelled>().len());
    assert_eq!(outcomes.0 + outcomes.1, 60);
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "both outcomes happen: {outcomes:?}");
    let reasons: std::collections::BTreeSet<String> = w.events::<OrderCancelled>().into_iter().map(|c| c.reason).collect();
    assert!(reasons.contains(TIMEOUT) && reasons.contains(OUT_OF_STOCK), "{reasons:?}");
}

#[test]
fn every_event_of_a_saga_carries_its_correlation_id_and_its_cause() {
    let mut w = world(&[("A", 1)], &[], secs(30));
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    w.publish(&ORDERS, order("o-2", "c-1", &[("A", 1)]));
    w.advance(secs(60));
    for order_id in ["o-1", "o-2"] {
        let saga: Vec<_> = w.log().iter().filter(|r| r.meta.subject == order_id).collect();
        let placed = saga[0];
        assert_eq!(placed.type_name, "shop.orders.OrderPlaced");
        let correlation = placed.meta.correlation_id.clone().expect("a correlation id");
        let mut seen = vec![placed.meta.id.to_string()];
        for raw in &saga[1..] {
            assert_eq!(raw.meta.correlation_id.as_ref(), Some(&correlation), "{} of {order_id}", raw.type_name);
            let cause = raw.meta.causation_id.clone().expect("a cause");
            assert!(seen.contains(&cause), "{} of {order_id} is caused by an earlier event of the saga", raw.type_name);
            seen.push(raw.meta.id.to_string());
        }
        assert!(saga.len() >= 4, "{order_id}: {} events", saga.len());
    }
}

#[test]
fn the_same_inputs_replayed_emit_identical_events() {
    let run = || {
        let mut w = world(&[("A", 2)], &[("c-2", 50)], secs(30));
        w.publish(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
        w.publish(&ORDERS, order("o-2", "c-2", &[("A", 1)]));
        w.pause("payments-credit");
        w.publish(&ORDERS, order("o-3", "c-3", &[("A", 1)]));
        w.advance(secs(30));
        w.resume("payments-credit");
        w.log().iter().map(|r| (r.meta.id, r.meta.causation_id.clone(), r.type_name.clone(), r.datum.clone())).collect::<Vec<_>>()
    };
    let (first, second) = (run(), run());
    assert!(first.len() > 15, "{} events", first.len());
    assert_eq!(first, second);
}
