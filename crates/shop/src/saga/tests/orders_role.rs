//! Rule 3: the orders role.

use super::*;

#[test]
fn orders_confirms_a_charged_order_once_and_stops_its_timeout() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)])).then_emitted_nothing();
    assert_eq!(t.deadline("o-1", PAYMENT_TIMEOUT).map(|d| d.at), Some(t.now() + chrono::Duration::seconds(30)));
    t.advance(secs(7)).then_emitted_nothing();
    let charged_at = t.now();
    t.when(&PAYMENTS, charged("o-1", "c-1", 100)).then_emitted(&ORDERS, &confirmed_of("o-1", charged_at)).then_emitted_count(1);
    let sent = t.emitted_events::<OrderConfirmed>();
    assert_eq!(sent[0].confirmed_at, Some(TimestampMillis::from(start_time() + chrono::Duration::seconds(7))), "confirmed when the charge was reacted to, not when placed");
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
    t.advance(secs(2));
    let rejected_at = t.now();
    t.when(&INVENTORY, rejected("o-1", "A", 1, 0)).then_emitted(&ORDERS, &cancelled("o-1", OUT_OF_STOCK, rejected_at)).then_emitted_count(1);
    let sent = t.emitted_events::<OrderCancelled>();
    assert_eq!((sent[0].reason.as_str(), sent[0].cancelled_by.as_deref()), ("out-of-stock", Some("system")));
    assert_eq!(sent[0].cancelled_at.map(|at| at.as_datetime()), Some(t.emitted()[0].meta.time), "cancelled_at is the event's ce_time");
    t.when(&PAYMENTS, charged("o-1", "c-1", 100)).then_emitted_nothing();
    t.advance(secs(60)).then_emitted_nothing();
}

#[test]
fn orders_cancels_when_payment_is_declined() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    t.advance(secs(3));
    let declined_at = t.now();
    t.when(&PAYMENTS, declined("o-1", "c-1", "insufficient-credit")).then_emitted(&ORDERS, &cancelled("o-1", PAYMENT_DECLINED, declined_at)).then_emitted_count(1);
    t.advance(secs(60)).then_emitted_nothing();
}

#[test]
fn orders_times_out_exactly_at_the_timeout_and_ignores_late_outcomes() {
    let mut t = Scenario::new(Orders { payment_timeout: secs(5) });
    let placed_at = t.now();
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    let due = t.deadline("o-1", PAYMENT_TIMEOUT).map(|d| d.at);
    assert_eq!(due, Some(placed_at + chrono::Duration::seconds(5)));
    t.advance(Duration::from_millis(4_999)).then_emitted_nothing();
    t.advance(Duration::from_millis(1));
    t.then_emitted(&ORDERS, &cancelled("o-1", TIMEOUT, t.now())).then_emitted_count(1);
    let sent = t.emitted_events::<OrderCancelled>();
    assert_eq!(sent[0].cancelled_at.map(|at| at.as_datetime()), due, "cancelled at the deadline's due time: placed + the payment timeout");
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
    t.when(&ORDERS, confirmed_of("o-1", t.now())).then_emitted_nothing();
}

#[test]
fn orders_treats_a_customer_cancellation_as_the_end() {
    let mut t = Scenario::new(Orders::default());
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    let by_customer = OrderCancelled { cancelled_by: Some("customer".into()), ..cancelled("o-1", "changed their mind", t.now()) };
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
    t.advance(secs(10));
    t.then_emitted(&ORDERS, &cancelled("o-1", TIMEOUT, start_time() + chrono::Duration::seconds(30))).then_emitted_count(1);
    t.advance(secs(20));
    t.then_emitted(&ORDERS, &cancelled("o-2", TIMEOUT, start_time() + chrono::Duration::seconds(50))).then_emitted_count(1);
}

