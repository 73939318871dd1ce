//! The saga's rules one by one, through the processes; two instances of each role.

use std::collections::HashSet;
use std::time::Duration;

use herald_shop::payments::{PaymentCharged, PaymentDeclined};
use herald_shop::OrderPlaced;
use herald_testkit::wait_until;

use crate::checker::{self, type_of, Ev};
use crate::shop::{line, order, rules, Role, Shop};

const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn every_rule_holds_through_the_processes() {
    let config = herald_testkit::kafka().await;
    let rules = rules(&[("A", 6), ("B", 1), ("C", 10)], &[("poor", 100), ("rich", 1_000_000)], 100_000);
    let shop = Shop::new(config.clone(), "saga.rules", rules.clone(), Duration::from_secs(10)).await;
    let mut procs = shop.start_all(1);
    // Every role up before the orders come, so only the slow order below can time out.
    wait_until(Duration::from_secs(60), "every role holds its partitions", || async {
        let mut all = true;
        for p in &procs {
            all &= p.assigned().await == Some(Role::PARTITIONS);
        }
        all
    })
    .await;
    let mut placed: Vec<OrderPlaced> = Vec::new();
    let none = HashSet::new();

    // Reserved and charged → confirmed; a short SKU → out-of-stock; one short SKU of two →
    // out-of-stock (the other SKU's hold released, seen below); declined → cancelled and
    // the stock released; the same OrderPlaced twice → one saga.
    let ok = order("ok", "rich", vec![line("A", 2, 100)]);
    let short = order("short", "rich", vec![line("B", 3, 100)]);
    let partial = order("partial", "rich", vec![line("A", 1, 100), line("B", 5, 100)]);
    let unknown = order("unknown-sku", "rich", vec![line("Z", 1, 100)]);
    let poor = order("poor", "poor", vec![line("A", 1, 500)]);
    let dup = order("dup", "rich", vec![line("A", 1, 100), line("A", 1, 100)]);
    for o in [&ok, &short, &partial, &unknown, &poor, &dup, &dup] {
        shop.place(o).await;
    }
    placed.extend([ok, short, partial, unknown, poor, dup]);
    let (log, _) = checker::settled(&config, &shop.prefix, &placed, &rules, &none, SETTLE).await;
    assert_eq!(log.outcome("ok").as_deref(), Some("confirmed"));
    assert_eq!((log.count("ok", "StockReserved"), log.count("ok", "PaymentCharged")), (1, 1));
    assert_eq!(log.outcome("short").as_deref(), Some("out-of-stock"));
    let rejected: Vec<_> = log.of("short").filter_map(|s| match &s.event { Ev::Inventory(herald_shop::inventory::InventoryEvent::Rejected(r)) => Some((r.sku.clone(), r.requested, r.available)), _ => None }).collect();
    assert_eq!(rejected, vec![("B".to_owned(), 3, 1)]);
    assert_eq!((log.count("short", "StockReserved"), log.count("short", "PaymentCharged")), (0, 0));
    assert_eq!(log.outcome("partial").as_deref(), Some("out-of-stock"));
    assert_eq!(log.outcome("unknown-sku").as_deref(), Some("out-of-stock"), "a SKU not in the stock file has 0");
    assert_eq!(log.outcome("poor").as_deref(), Some("payment-declined"));
    assert_eq!((log.count("poor", "StockReserved"), log.count("poor", "StockReleased"), log.count("poor", "PaymentCharged")), (1, 1, 0));
    assert_eq!(log.outcome("dup").as_deref(), Some("confirmed"));
    assert_eq!((log.count("dup", "StockReserved"), log.count("dup", "PaymentCharged"), log.count("dup", "OrderConfirmed")), (1, 1, 1));

    // The stock is exact: 6 A − 2 (ok) − 2 (dup) = 2 left, partial's and poor's holds back
    // (6 covers every hold at once: ok 2, partial 1, poor 1, dup 2).
    let rest = order("rest", "rich", vec![line("A", 2, 100)]);
    shop.place(&rest).await;
    placed.push(rest);
    checker::settled(&config, &shop.prefix, &placed, &rules, &none, SETTLE).await;
    let over = order("over", "rich", vec![line("A", 1, 100)]);
    shop.place(&over).await;
    placed.push(over);
    let (log, _) = checker::settled(&config, &shop.prefix, &placed, &rules, &none, SETTLE).await;
    assert_eq!(log.outcome("rest").as_deref(), Some("confirmed"));
    assert_eq!(log.outcome("over").as_deref(), Some("out-of-stock"));

    // Late outcomes after the terminal event change nothing: a charge for a cancelled
    // order, a decline for a confirmed one, written by someone else into shop.payments.
    let late_charge = PaymentCharged { order_id: "short".into(), customer_id: "rich".into(), payment_id: "pay-late".into(), amount_cents: 300 };
    let late_decline = PaymentDeclined { order_id: "ok".into(), customer_id: "rich".into(), reason: "insufficient-credit".into() };
    let a = shop.publisher().publish(&shop.payments_topic(), &late_charge).await.expect("late charge");
    let b = shop.publisher().publish(&shop.payments_topic(), &late_decline).await.expect("late decline");
    let injected: HashSet<String> = [a.id.to_string(), b.id.to_string()].into();
    let group = format!("{}orders", shop.prefix);
    let payments = shop.topic("shop.payments");
    wait_until(Duration::from_secs(60), "the orders role committed past the late outcomes", || async {
        let committed = herald_testkit::committed(&config, &group, &payments, 6).await;
        [&a, &b].iter().all(|p| committed[p.partition as usize].is_some_and(|c| c > p.offset))
    })
    .await;
    let log = checker::read(&config, &shop.prefix, false).await;
    assert_eq!(log.terminals("short").len(), 1);
    assert_eq!(log.terminals("ok").len(), 1);
    assert_eq!(log.outcome("ok").as_deref(), Some("confirmed"));

    // No outcome within the payment timeout → cancelled (timeout), the stock released;
    // the payments role comes back late: whatever it does is compensated (net zero).
    let payments_proc = procs.iter_mut().find(|p| p.role == Role::Payments).expect("payments");
    payments_proc.kill9();
    let slow = order("slow", "rich", vec![line("C", 4, 100)]);
    shop.place(&slow).await;
    placed.push(slow);
    wait_until(SETTLE, "slow cancelled for timeout and its stock released", || async {
        let log = checker::read(&config, &shop.prefix, false).await;
        log.outcome("slow").as_deref() == Some("timeout") && log.count("slow", "StockReleased") == 1
    })
    .await;
    procs.iter_mut().find(|p| p.role == Role::Payments).expect("payments").restart();
    // The late charge (if billing saw StockReserved before OrderCancelled) is refunded.
    let (log, verdict) = checker::settled(&config, &shop.prefix, &placed, &rules, &injected, SETTLE).await;
    assert_eq!(log.count("slow", "PaymentCharged"), log.count("slow", "PaymentRefunded"));
    assert_eq!(log.terminals("slow").len(), 1);

    for p in &mut procs {
        p.stop(Duration::from_secs(30)).await;
    }
    let (log, _) = checker::final_check(&config, &shop.prefix, &placed, &rules, &injected).await;
    eprintln!("rules: outcomes {:?}; {} events; slow: {:?}", verdict.outcomes, log.events.len(), log.of("slow").map(|s| type_of(&s.event)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_of_each_role_share_the_work() {
    let config = herald_testkit::kafka().await;
    let rules = rules(&[("A", 40), ("B", 40), ("C", 20), ("D", 60)], &[("c1", 5_000), ("c2", 5_000), ("c3", 20_000), ("c4", 100_000)], 10_000);
    let shop = Shop::new(config.clone(), "saga.two", rules.clone(), Duration::from_secs(20)).await;
    let mut procs = shop.start_all(2);
    // Both instances of every role hold partitions (static membership, range assignor)
    // before any order is placed: orders placed earlier could all be handled by the first
    // instance to join, leaving the other nothing to react to.
    wait_until(Duration::from_secs(60), "every instance holds partitions", || async {
        let mut all = true;
        for p in &procs {
            all &= p.assigned().await.is_some_and(|n| n > 0);
        }
        all
    })
    .await;
    let placed: Vec<OrderPlaced> = (0..80).map(|i| shop.random_order(&format!("o{i}"))).collect();
    for o in &placed {
        shop.place(o).await;
    }
    let (_, verdict) = checker::settled(&config, &shop.prefix, &placed, &rules, &HashSet::new(), SETTLE).await;
    for p in &mut procs {
        let reactions = p.counter("reactions").await.unwrap_or(0);
        assert!(reactions > 0, "{:?} {} reacted to nothing", p.role, p.instance);
        p.stop(Duration::from_secs(30)).await;
    }
    checker::final_check(&config, &shop.prefix, &placed, &rules, &HashSet::new()).await;
    eprintln!("two instances: outcomes {:?}", verdict.outcomes);
    assert!(verdict.outcomes.get("confirmed").is_some_and(|n| *n > 0), "some orders confirmed: {:?}", verdict.outcomes);
}
