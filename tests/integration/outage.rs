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

/// A consumer dropped without its orderly shutdown (its task dropped with the tokio
/// runtime it ran on: a panic, a `select!` that lost, a `main` that returned) while its
/// broker is gone does not keep its thread, and so its program, from ending. Closing the
/// client leaves the group, which waits for a coordinator that never answers; rdkafka's
/// drop waits for the close without a deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_dropped_without_shutdown_while_its_broker_is_gone_lets_its_program_end() {
    let (broker, config, orders) = started_with_orders("dropped").await;
    let events: Vec<OrderPlaced> = (0..20).map(|i| OrderPlaced::example(&format!("o-{i}"), "c", i)).collect();
    for r in publisher(&config).publish_all(&orders, &events).await {
        r.expect("published");
    }
    // The consumer runs on a tokio runtime of its own, on a thread of its own, so that
    // the test can drop that runtime and see whether dropping it ends.
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
    let (drop_tx, drop_rx) = std::sync::mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
    let group = unique("g");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
        runtime.block_on(async {
            let seen = Seen::default();
            let built = consumer(&config, &group).subscribe(&orders, seen.handler()).build().await.expect("consumer builds");
            tokio::spawn(built.run(std::future::pending()));
            wait_until(Duration::from_secs(60), "events handled", || async { seen.len() >= 20 }).await;
        });
        let _ = joined_tx.send(());
        let _ = drop_rx.recv();
        drop(runtime);
        let _ = dropped_tx.send(());
    });
    joined_rx.await.expect("the consumer handled its events");

    broker.run("stop").await;
    drop_tx.send(()).expect("consumer thread");
    let dropped = tokio::time::timeout(Duration::from_secs(30), dropped_rx).await;
    broker.run("start").await;
    dropped.expect("the consumer's tokio runtime was dropped within 30 s of being told to").expect("consumer thread");
}

/// A broker frozen past `broker.session.timeout.ms` (9 s) is fenced for a moment once it
/// thaws, and a metadata response then lists no broker: librdkafka drops every broker such
/// a response leaves out and does not re-bootstrap after it (confluentinc/librdkafka#5301),
/// so a client that asked then had no broker left for good. A publisher and a consumer
/// busy across such a freeze deliver and handle every event after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_and_a_consumer_carry_on_after_their_broker_was_frozen_past_its_session() {
    let (broker, config, orders) = started_with_orders("frozen").await;
    // Metadata asked for every half second, so that both clients ask while the broker is
    // fenced (at the default five minutes, one in three runs did).
    let config = config.set("topic.metadata.refresh.interval.ms", "500");
    // Sends give up after 3 s (not 300), so that the freeze shows in their outcomes.
    let publisher = publisher(&config.clone().set("message.timeout.ms", "3000"));
    let seen = Seen::default();
    let running = Running::start(consumer(&config, &unique("g")).subscribe(&orders, seen.handler())).await;

    // Sends all along, before, during and a few seconds after the freeze.
    let stop_sending = tokio_util::sync::CancellationToken::new();
    let sending = {
        let (publisher, orders, stop) = (publisher.clone(), orders.clone(), stop_sending.clone());
        tokio::spawn(async move {
            let (mut sent, mut failed) = (Vec::new(), 0);
            for i in 0i64.. {
                if stop.is_cancelled() {
                    break;
                }
                let order = OrderPlaced::example(&format!("o-{}", i % 20), "c", i);
                match publisher.publish(&orders, &order).await {
                    Ok(_) => sent.push(i),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (sent, failed)
        })
    };
    wait_until(Duration::from_secs(60), "events handled before the freeze", || async { seen.len() >= 10 }).await;
    broker.freeze();
    // The fault itself: frozen long enough for the controller to fence the broker.
    tokio::time::sleep(Duration::from_secs(12)).await;
    broker.thaw();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_sending.cancel();
    let (sent, failed) = sending.await.expect("sender");
    assert!(failed > 0, "some sends failed while the broker was frozen (else nothing was tested)");

    // After the freeze: new events are delivered and handled, and every acknowledged one.
    running
        .shutdown_after(async {
            let after: Vec<OrderPlaced> = (1000..1050).map(|i| OrderPlaced::example(&format!("o-{}", i % 20), "c", i)).collect();
            wait_until(Duration::from_secs(60), "sends acknowledged after the freeze", || {
                let (publisher, orders, first) = (publisher.clone(), orders.clone(), after[0].clone());
                async move { publisher.publish(&orders, &first).await.is_ok() }
            })
            .await;
            for r in publisher.publish_all(&orders, &after).await {
                r.expect("published after the freeze");
            }
            let delivered: Vec<i64> = sent.into_iter().chain(after.iter().map(|o| o.total_cents)).collect();
            let handled = || seen.all().iter().filter_map(|e| match &e.event { OrderEvent::Placed(p) => Some(p.total_cents), _ => None }).collect::<std::collections::HashSet<_>>();
            wait_until(Duration::from_secs(60), "every acknowledged event handled after the freeze", || async { delivered.iter().all(|t| handled().contains(t)) }).await;
        })
        .await;
}
