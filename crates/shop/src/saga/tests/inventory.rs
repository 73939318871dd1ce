//! Rule 1: inventory, per order and per SKU.

use super::*;

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
    t.when(&ORDERS, confirmed_of("o-1", t.now())).then_emitted_nothing();
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
    t.when(&ORDERS, cancelled("o-1", OUT_OF_STOCK, t.now())).then_emitted_nothing();
    assert_eq!(t.state("o-1").phase, ReservationPhase::Rejected);
    assert!(t.state("o-1").held.is_empty());
}

#[test]
fn reservations_release_once_when_a_reserved_order_is_cancelled() {
    let mut t = Scenario::new(Reservations);
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 2), ("B", 1)]));
    t.given(&STOCK_REPLIES, sku_reserved("o-1", "A", 2)).given(&STOCK_REPLIES, sku_reserved("o-1", "B", 1));
    t.when(&ORDERS, cancelled("o-1", PAYMENT_DECLINED, t.now()));
    t.then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "A")).then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "B"));
    t.then_emitted(&INVENTORY, &StockReleased { order_id: "o-1".into(), lines: vec![stock_line("A", 2), stock_line("B", 1)] }).then_emitted_count(3);
    t.redeliver().then_emitted_nothing();
    t.when(&ORDERS, cancelled("o-1", TIMEOUT, t.now())).then_emitted_nothing();
    assert_eq!(t.state("o-1").phase, ReservationPhase::Released);
}

#[test]
fn reservations_cancelled_while_pending_release_what_they_hold_and_what_comes_later() {
    let mut t = Scenario::new(Reservations);
    t.given(&ORDERS, order("o-1", "c-1", &[("A", 2), ("B", 1)]));
    t.given(&STOCK_REPLIES, sku_reserved("o-1", "A", 2));
    t.when(&ORDERS, cancelled("o-1", TIMEOUT, t.now())).then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "A")).then_emitted_count(1);
    t.when(&STOCK_REPLIES, sku_reserved("o-1", "B", 1)).then_emitted(&STOCK_COMMANDS, &release_sku("o-1", "B")).then_emitted_count(1);
    assert_eq!(t.emitted_events::<StockReserved>().len(), 0);
    assert_eq!(t.state("o-1").phase, ReservationPhase::Cancelled);
}

#[test]
fn reservations_of_an_order_cancelled_before_it_was_placed_never_start() {
    let mut t = Scenario::new(Reservations);
    t.when(&ORDERS, cancelled("o-1", TIMEOUT, t.now())).then_emitted_nothing();
    t.when(&ORDERS, order("o-1", "c-1", &[("A", 1)])).then_emitted_nothing();
}

#[test]
fn an_order_without_lines_is_reserved_at_once() {
    let mut t = Scenario::new(Reservations);
    t.when(&ORDERS, order("o-1", "c-1", &[])).then_emitted(&INVENTORY, &reserved("o-1", "c-1", 0, &[])).then_emitted_count(1);
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


/// A SKU remembers an order for `Stock::remember` after it last changed it, then forgets
/// it (its units stay sold): its state holds the orders of that window, not its whole
/// history. Before, a SKU's state grew with every order until its changelog record was
/// too large for Kafka and the role stopped.
#[test]
fn stock_forgets_orders_it_last_changed_before_its_window() {
    let mut t = Scenario::new(Stock { remember: secs(3600), ..stock(&[("A", 1_000_000)]) });
    t.when(&STOCK_COMMANDS, reserve_sku("o-sold", "A", 3));
    t.when(&STOCK_COMMANDS, reserve_sku("o-released", "A", 2)).when(&STOCK_COMMANDS, release_sku("o-released", "A"));
    t.advance(secs(1800));
    t.when(&STOCK_COMMANDS, reserve_sku("o-sold", "A", 3)).then_emitted_nothing();
    assert_eq!(t.state("A").held.len(), 1, "remembered within the window");
    t.advance(secs(1801));
    t.when(&STOCK_COMMANDS, reserve_sku("o-2", "A", 1)).then_emitted(&STOCK_REPLIES, &sku_reserved("o-2", "A", 1));
    let a = t.state("A");
    assert_eq!(a.held.iter().map(|h| h.order_id.as_str()).collect::<Vec<_>>(), ["o-2"], "o-sold forgotten");
    assert!(a.closed.is_empty(), "o-released forgotten: {:?}", a.closed);
    assert_eq!(a.available, 1_000_000 - 3 - 1, "forgotten units stay sold");
    // A steady stream: the state holds one window of orders, however long it runs.
    for i in 0..600 {
        t.advance(secs(60));
        t.when(&STOCK_COMMANDS, reserve_sku(&format!("o-{i}-x"), "A", 1));
    }
    assert!(t.state("A").held.len() <= 61, "{} holds", t.state("A").held.len());
}
