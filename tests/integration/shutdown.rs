//! Stopping mid-stream: graceful shutdown commits exactly what was handled; a restart
//! continues from there and loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_bus::{Envelope, HandlerError, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{committed, kafka, topic, unique, wait_until};

use crate::support::{consumer, order_id, publisher, Running, Seen, DEADLINE};

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_commits_and_a_restart_loses_nothing() {
    let config = kafka().await;
    let partitions = 3;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "restart", partitions).await);
    let events: Vec<OrderPlaced> = (0..3000).map(|i| OrderPlaced::example(&format!("o-{i}"), "c", i)).collect();
    for r in publisher(&config).publish_all(&orders, &events).await {
        r.expect("published");
    }
    let group = unique("g");

    // First run: a slowish handler, stopped once a third is done.
    let first = Seen::default();
    let slow = {
        let first = first.clone();
        move |e: Envelope<OrderEvent>| {
            let first = first.clone();
            async move {
                tokio::time::sleep(Duration::from_micros(200)).await; // simulated work
                first.0.lock().unwrap().push(e);
                Ok::<_, HandlerError>(())
            }
        }
    };
    let running = Running::start(consumer(&config, &group).max_buffered_bytes(64 * 1024).subscribe(&orders, slow)).await;
    wait_until(DEADLINE, "a third handled", || async { first.len() >= 1000 }).await;
    running.shutdown().await;
    let handled_first = first.len();
    assert!(handled_first < events.len(), "stopped mid-stream");

    // The committed offsets are exactly the records handled, per partition.
    let mut per_partition = vec![0i64; partitions as usize];
    for e in first.all() {
        per_partition[e.position.partition as usize] = per_partition[e.position.partition as usize].max(e.position.offset + 1);
    }
    let committed = committed(&config, &group, orders.name(), partitions).await;
    for (p, c) in committed.iter().enumerate() {
        assert_eq!(c.unwrap_or(0), per_partition[p], "partition {p}: committed offset equals handled position");
    }

    // Second run: the rest, nothing twice.
    let second = Seen::default();
    let running = Running::start(consumer(&config, &group).subscribe(&orders, second.handler())).await;
    wait_until(DEADLINE, "the rest handled", || async { handled_first + second.len() >= events.len() }).await;
    running.shutdown().await;
    let mut all: Vec<String> = first.all().iter().chain(second.all().iter()).map(|e| order_id(&e.event).to_owned()).collect();
    all.sort();
    let mut expected: Vec<String> = events.iter().map(|e| e.order_id.clone()).collect();
    expected.sort();
    assert_eq!(all, expected, "every event exactly once across the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_handler_does_not_block_shutdown_and_its_event_is_not_lost() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "stuck", 1).await);
    let publisher = publisher(&config);
    for id in ["before", "stuck", "after"] {
        publisher.publish(&orders, &OrderPlaced::example(id, "c", 1)).await.expect("published");
    }
    let group = unique("g");
    let reached_stuck = Arc::new(AtomicBool::new(false));
    let seen = Seen::default();
    let handler = {
        let (seen, reached) = (seen.clone(), reached_stuck.clone());
        move |e: Envelope<OrderEvent>| {
            let (seen, reached) = (seen.clone(), reached.clone());
            async move {
                if order_id(&e.event) == "stuck" {
                    reached.store(true, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                }
                seen.0.lock().unwrap().push(e);
                Ok::<_, HandlerError>(())
            }
        }
    };
    let running = Running::start(
        consumer(&config, &group).handler_timeout(Duration::from_secs(600)).drain_timeout(Duration::from_millis(500)).subscribe(&orders, handler),
    )
    .await;
    wait_until(DEADLINE, "the stuck event reached", || async { reached_stuck.load(Ordering::SeqCst) }).await;
    running.shutdown().await;
    assert_eq!(committed(&config, &group, orders.name(), 1).await, vec![Some(1)], "only `before` is committed");

    // A new member (no longer stuck) gets `stuck` and `after`.
    let again = Seen::default();
    let running = Running::start(consumer(&config, &group).subscribe(&orders, again.handler())).await;
    wait_until(DEADLINE, "the rest handled", || async { again.len() >= 2 }).await;
    running.shutdown().await;
    let ids: Vec<String> = again.all().iter().map(|e| order_id(&e.event).to_owned()).collect();
    assert_eq!(ids, vec!["stuck", "after"]);
}

/// A consumer whose future is dropped with its runtime (a test that ends, a process that
/// returns from `main` without stopping it) must let the runtime shut down: the client's
/// close runs its revocation, which must not wait for tasks that no longer run.
#[test]
fn dropping_the_runtime_under_a_running_consumer_lets_it_shut_down() {
    herald_testkit::runtime_drops_within(DEADLINE, || async {
        let config = kafka().await;
        let orders: Topic<OrderEvent> = Topic::named(topic(&config, "dropped", 3).await);
        let events: Vec<OrderPlaced> = (0..300).map(|i| OrderPlaced::example(&format!("o-{i}"), "c", i)).collect();
        for r in publisher(&config).publish_all(&orders, &events).await {
            r.expect("published");
        }
        let seen = Seen::default();
        let _running = Running::start(consumer(&config, &unique("g")).subscribe(&orders, seen.handler())).await;
        wait_until(DEADLINE, "some handled", || async { seen.len() > 0 }).await;
        // Left running (dropping the handle does not stop it): the runtime is dropped under it.
    });
}
