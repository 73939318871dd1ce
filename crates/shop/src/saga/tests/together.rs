//! All five participants together, with the invariants checked from the events alone.

use super::*;

fn world(stock_seed: &[(&str, i64)], credit: &[(&str, i64)], timeout: Duration) -> World {
    World::new()
        .with(Orders { payment_timeout: timeout })
        .with(Reservations)
        .with(stock(stock_seed))
        .with(Billing)
        .with(Credit::new(credit.iter().map(|(c, v)| ((*c).to_owned(), *v)).collect(), crate::saga::credit::DEFAULT_CREDIT))
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
    w.advance(secs(5));
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 2), ("B", 1)]));
    assert_eq!(w.events::<OrderConfirmed>(), [confirmed_of("o-1", start_time() + chrono::Duration::seconds(5))]);
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
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", OUT_OF_STOCK, w.now())]);
    assert_eq!(w.events::<ReleaseSku>(), [release_sku("o-1", "A")]);
    assert!(w.events::<PaymentCharged>().is_empty());
    // A's five units are back: the next order takes all of them.
    w.advance(secs(1));
    w.publish(&ORDERS, order("o-2", "c-2", &[("A", 5)]));
    assert_eq!(w.events::<OrderConfirmed>(), [confirmed_of("o-2", w.now())]);
    assert_eq!(w.events::<OrderCancelled>()[0].cancelled_at, Some(TimestampMillis::from(start_time())), "each terminal event keeps its own time");
    assert_invariants(&w, &seed, |_| 100_000);
}

#[test]
fn saga_payment_declined_releases_the_stock() {
    let seed = [("A", 1)];
    let mut w = world(&seed, &[("poor", 50)], secs(30));
    w.publish(&ORDERS, order("o-1", "poor", &[("A", 1)]));
    assert_eq!(w.events::<PaymentDeclined>(), [declined("o-1", "poor", "insufficient-credit")]);
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", PAYMENT_DECLINED, w.now())]);
    assert_eq!(w.events::<StockReleased>(), [StockReleased { order_id: "o-1".into(), lines: vec![stock_line("A", 1)] }]);
    w.publish(&ORDERS, order("o-2", "rich", &[("A", 1)]));
    assert_eq!(w.events::<OrderConfirmed>(), [confirmed_of("o-2", w.now())]);
    assert_invariants(&w, &seed, |c| if c == "poor" { 50 } else { 100_000 });
}

#[test]
fn saga_timeout_refunds_the_late_charge_and_releases_the_stock() {
    let seed = [("A", 3)];
    let mut w = world(&seed, &[], secs(30));
    w.pause("payments-credit");
    let placed_at = w.now();
    w.publish(&ORDERS, order("o-1", "c-1", &[("A", 3)]));
    assert_eq!(w.events::<StockReserved>().len(), 1);
    w.advance(secs(29));
    assert!(w.events::<OrderCancelled>().is_empty());
    w.advance(secs(1));
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", TIMEOUT, placed_at + chrono::Duration::seconds(30))]);
    assert_eq!(w.events::<OrderCancelled>()[0].cancelled_at.map(|at| at.as_datetime()), Some(placed_at + chrono::Duration::seconds(30)), "cancelled at placed + the payment timeout");
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
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", TIMEOUT, w.now())]);
    w.resume("inventory-stock");
    assert!(w.events::<StockReserved>().is_empty(), "reserved after the cancellation: released, never published");
    assert_eq!(w.events::<ReleaseSku>(), [release_sku("o-1", "A")]);
    assert!(w.events::<PaymentCharged>().is_empty());
    w.publish(&ORDERS, order("o-2", "c-1", &[("A", 3)]));
    assert_eq!(w.events::<OrderConfirmed>(), [confirmed_of("o-2", w.now())], "the late reservation was returned");
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
    // Due at 30 s but fired at 120 s, when orders came back: the system cancelled then.
    assert_eq!(w.events::<OrderCancelled>(), [cancelled("o-1", TIMEOUT, start_time() + chrono::Duration::seconds(120))]);
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
        .with(Credit::new((0..4).map(|i| (format!("c-{i}"), credit(&format!("c-{i}")))).collect(), 700));
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
