//! Rule 2: payments, per order and per customer.

use super::*;

#[test]
fn billing_asks_one_charge_per_reserved_order() {
    let mut t = Scenario::new(Billing);
    t.when(&INVENTORY, reserved("o-1", "c-1", 250, &[("A", 1)])).then_emitted(&CREDIT_COMMANDS, &charge("o-1", "c-1", 250)).then_emitted_count(1);
    t.redeliver().then_emitted_nothing();
    t.when(&INVENTORY, reserved("o-1", "c-1", 250, &[("A", 1)])).then_emitted_nothing();
    t.when(&ORDERS, confirmed_of("o-1", t.now())).then_emitted_nothing();
    t.when(&ORDERS, cancelled("o-1", TIMEOUT, t.now())).then_emitted_nothing();
}

#[test]
fn billing_never_charges_an_order_it_has_seen_cancelled() {
    let mut t = Scenario::new(Billing);
    t.when(&ORDERS, cancelled("o-1", TIMEOUT, t.now())).then_emitted_nothing();
    t.when(&INVENTORY, reserved("o-1", "c-1", 250, &[("A", 1)])).then_emitted_nothing();
}

#[test]
fn billing_asks_a_refund_once_when_a_charged_order_is_cancelled() {
    let mut t = Scenario::new(Billing);
    t.given(&INVENTORY, reserved("o-1", "c-1", 250, &[("A", 1)]));
    t.when(&ORDERS, cancelled("o-1", TIMEOUT, t.now())).then_emitted(&CREDIT_COMMANDS, &refund("o-1", "c-1")).then_emitted_count(1);
    t.redeliver().then_emitted_nothing();
    t.when(&ORDERS, cancelled("o-1", TIMEOUT, t.now())).then_emitted_nothing();
}


#[test]
fn credit_charges_what_is_left_and_declines_the_rest() {
    let mut t = Scenario::new(Credit::new(HashMap::from([("c-1".to_owned(), 1_000)]), 50));
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


/// A customer's credit remembers an order for `Credit::remember` after it last changed
/// it, then forgets it (its money stays taken or given back).
#[test]
fn credit_forgets_orders_it_last_changed_before_its_window() {
    let mut t = Scenario::new(Credit { remember: secs(3600), ..Credit::default() });
    t.when(&CREDIT_COMMANDS, charge("o-1", "c-1", 700)).when(&CREDIT_COMMANDS, charge("o-2", "c-1", -1));
    t.advance(secs(1800));
    t.when(&CREDIT_COMMANDS, refund("o-1", "c-1")).then_emitted(&PAYMENTS, &PaymentRefunded { order_id: "o-1".into(), customer_id: "c-1".into(), payment_id: "pay-o-1".into(), amount_cents: 700 });
    t.advance(secs(3000));
    // o-2 closed 80 min ago: forgotten; o-1's refund 50 min ago: remembered.
    t.when(&CREDIT_COMMANDS, charge("o-3", "c-1", 100)).then_emitted(&PAYMENTS, &charged("o-3", "c-1", 100));
    let c = t.state("c-1");
    assert_eq!(c.charges.iter().map(|ch| ch.order_id.as_str()).collect::<Vec<_>>(), ["o-1", "o-3"]);
    assert!(c.closed.is_empty(), "{:?}", c.closed);
    t.advance(secs(3700));
    t.when(&CREDIT_COMMANDS, charge("o-4", "c-1", 100));
    assert_eq!(t.state("c-1").charges.iter().map(|ch| ch.order_id.as_str()).collect::<Vec<_>>(), ["o-4"]);
    assert_eq!(t.state("c-1").remaining, 100_000 - 200, "forgotten charges stay taken, the refund given back");
}
