//! Per-key order over a multi-partition topic, with back-pressure (pause/resume) in play.

use std::collections::HashMap;

use herald_bus::Topic;
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};

use crate::support::{consumer, publisher, Running, Seen, DEADLINE};

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_events_keep_per_key_order() {
    const KEYS: i64 = 100;
    const PER_KEY: i64 = 100;
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "order", 6).await);
    let publisher = publisher(&config);
    // Interleave keys: event n of key k carries sequence n in total_cents.
    let events: Vec<OrderPlaced> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |k| OrderPlaced::example(&format!("key-{k}"), "c", seq)))
        .collect();
    for result in publisher.publish_all(&orders, &events).await {
        result.expect("published");
    }

    let seen = Seen::default();
    // A small buffer (16 KiB per partition) forces the pause/resume path under load.
    let running = Running::start(consumer(&config, &unique("g")).max_buffered_bytes(64 * 1024).subscribe(&orders, seen.handler())).await;
    let pauses = running.health.clone();
    let total = (KEYS * PER_KEY) as usize;
    wait_until(DEADLINE * 2, "10 000 events handled", || async { seen.len() >= total }).await;
    running.shutdown().await;
    assert!(pauses.pauses() > 0, "the test exercised pause and resume");

    let mut last: HashMap<String, i64> = HashMap::new();
    for e in seen.all() {
        let OrderEvent::Placed(p) = e.event else { panic!("unexpected event") };
        let prev = last.insert(p.order_id.clone(), p.total_cents);
        let expected = prev.map_or(0, |n| n + 1);
        assert_eq!(p.total_cents, expected, "key {} out of order or duplicated", p.order_id);
    }
    assert_eq!(last.len(), KEYS as usize);
    assert!(last.values().all(|n| *n == PER_KEY - 1), "every key complete");
    assert_eq!(seen.len(), total, "each event handled exactly once");
}
