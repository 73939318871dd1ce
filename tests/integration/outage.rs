//! A broker that goes away and comes back: the consumer keeps running, the publisher keeps
//! retrying, and no acknowledged event is lost.
//!
//! This test runs its own single-node broker (through `scripts/kafka` on free ports with a
//! private data folder), so stopping it disturbs no other test.

use std::time::Duration;

use herald_bus::Topic;
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{unique, wait_until};

use crate::support::{consumer, order_id, publisher, Broker, Running, Seen};

/// A private broker, started, with a topic of 3 partitions for orders.
async fn started_with_orders(name: &str) -> (Broker, herald_bus::KafkaConfig, Topic<OrderEvent>) {
    let broker = Broker::new(&format!("herald-{name}"));
    broker.run("start").await;
    let config = broker.config();
    let topic = unique(name);
    herald_bus::admin::create_topics(&config, &[herald_bus::admin::TopicSpec::new(&topic).partitions(3)]).await.expect("topic");
    (broker, config, Topic::named(topic))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_loses_nothing() {
    let (broker, config, orders) = started_with_orders("outage").await;
    let publisher = publisher(&config);
    let before: Vec<OrderPlaced> = (0..300).map(|i| OrderPlaced::example(&format!("o-{}", i % 30), "c", i)).collect();
    for r in publisher.publish_all(&orders, &before).await {
        r.expect("published before the outage");
    }

    let seen = Seen::default();
    let running = Running::start(consumer(&config, &unique("g")).subscribe(&orders, seen.handler())).await;
    wait_until(Duration::from_secs(60), "events handled before the outage", || async { seen.len() >= 300 }).await;

    broker.run("stop").await;
    // Publishing while the broker is down: the sends wait inside the client.
    let during: Vec<OrderPlaced> = (300..400).map(|i| OrderPlaced::example(&format!("o-{}", i % 30), "c", i)).collect();
    let publishing = {
        let (publisher, orders, during) = (publisher.clone(), orders.clone(), during.clone());
        tokio::spawn(async move { publisher.publish_all(&orders, &during).await })
    };
    assert!(!running.task.is_finished(), "the consumer keeps running without a broker");
    broker.run("start").await;

    for r in publishing.await.expect("publish task") {
        r.expect("published across the outage");
    }
    wait_until(Duration::from_secs(90), "every event handled after the outage", || async {
        seen.all().iter().filter_map(|e| match &e.event { OrderEvent::Placed(p) => Some(p.total_cents), _ => None }).collect::<std::collections::HashSet<_>>().len() >= 400
    })
    .await;
    assert!(running.health.is_healthy(), "{:?}", running.health.last_error());
    running.shutdown().await;

    // Every event at least once (a rejoin after the outage may repeat records whose
    // offsets were not committed yet), and per key the first deliveries in publishing order.
    let mut first_seen = std::collections::HashSet::new();
    let mut last = std::collections::HashMap::new();
    for e in seen.all() {
        let OrderEvent::Placed(p) = &e.event else { panic!("unexpected event") };
        if !first_seen.insert(p.total_cents) {
            continue; // a repeat
        }
        if let Some(prev) = last.insert(order_id(&e.event).to_owned(), p.total_cents) {
            assert!(p.total_cents > prev, "{}: {} after {prev}", p.order_id, p.total_cents);
        }
    }
    assert_eq!(first_seen.len(), 400, "no event lost");
}

/// Shutting down while the broker is away ends in bounded time: the final commit and the
/// group leave cannot reach anyone, and nothing waits for them for ever (librdkafka's
/// synchronous commit waits for a coordinator without a deadline). The records handled
/// since the last commit are processed again by the next owner, as after any crash.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_stops_in_bounded_time_when_its_broker_is_gone() {
    let (broker, config, orders) = started_with_orders("gone").await;
    let events: Vec<OrderPlaced> = (0..100).map(|i| OrderPlaced::example(&format!("o-{}", i % 10), "c", i)).collect();
    for r in publisher(&config).publish_all(&orders, &events).await {
        r.expect("published");
    }
    let seen = Seen::default();
    let running = Running::start(consumer(&config, &unique("g")).subscribe(&orders, seen.handler())).await;
    wait_until(Duration::from_secs(60), "events handled", || async { seen.len() >= 100 }).await;

    broker.run("stop").await;
    running.stop.cancel();
    // The final commit waits at most 30 s, leaving the group 10 s.
    let stopped = tokio::time::timeout(Duration::from_secs(90), running.task).await;
    // Back, so that what the client still tries in the background can end with the test.
    broker.run("start").await;
    stopped.expect("the consumer stops within 90 s without its broker").expect("consumer task").expect("stopped without error");
}
