//! Two members of one group split the partitions and handle each event once.

use herald_bus::Topic;
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};

use crate::support::{consumer, publisher, Running, Seen, DEADLINE};

#[tokio::test(flavor = "multi_thread")]
async fn two_members_split_partitions_and_handle_each_event_once() {
    let config = kafka().await;
    let partitions = 6;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "group", partitions).await);
    let group = unique("g");
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let a = Running::start(consumer(&config, &group).subscribe(&orders, seen_a.handler())).await;
    let b = Running::start(consumer(&config, &group).subscribe(&orders, seen_b.handler())).await;
    wait_until(DEADLINE, "both members assigned, all partitions covered", || async {
        let (na, nb) = (a.health.assigned_partitions(), b.health.assigned_partitions());
        na > 0 && nb > 0 && na + nb == partitions as usize
    })
    .await;

    let events: Vec<OrderPlaced> = (0..2000).map(|i| OrderPlaced::example(&format!("o-{i}"), "c", i)).collect();
    for r in publisher(&config).publish_all(&orders, &events).await {
        r.expect("published");
    }
    wait_until(DEADLINE, "2000 events handled between the two", || async { seen_a.len() + seen_b.len() >= 2000 }).await;
    a.shutdown().await;
    b.shutdown().await;

    let (ca, cb) = (seen_a.counts(), seen_b.counts());
    assert!(!ca.is_empty() && !cb.is_empty(), "both members handled events");
    for e in &events {
        let total = ca.get(&e.order_id).copied().unwrap_or(0) + cb.get(&e.order_id).copied().unwrap_or(0);
        assert_eq!(total, 1, "{} handled {total} times", e.order_id);
    }
    // Partitions are disjoint: no partition was handled by both.
    let parts = |s: &Seen| s.all().iter().map(|e| e.position.partition).collect::<std::collections::HashSet<_>>();
    assert!(parts(&seen_a).is_disjoint(&parts(&seen_b)));
}
