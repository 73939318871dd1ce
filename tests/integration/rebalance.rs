//! Members joining mid-stream: revocation commits what was handled, so the new owner
//! continues exactly there. Checked with the eager and the cooperative protocol.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_bus::{Envelope, HandlerError, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};

use crate::support::{consumer, order_id, publisher, Running, Seen, DEADLINE};

async fn join_mid_stream(strategy: &str) {
    // Fast heartbeats so members learn of the rebalance quickly.
    let config = kafka().await.set("partition.assignment.strategy", strategy).set("heartbeat.interval.ms", "300");
    let partitions = 4;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "rebalance", partitions).await);
    let events: Vec<OrderPlaced> = (0..4000).map(|i| OrderPlaced::example(&format!("o-{i}"), "c", i)).collect();
    for r in publisher(&config).publish_all(&orders, &events).await {
        r.expect("published");
    }
    let group = unique("g");
    let slow_handler = |seen: Seen| {
        move |e: Envelope<OrderEvent>| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await; // simulated work: ~5 s for the whole stream
                seen.0.lock().unwrap().push(e);
                Ok::<_, HandlerError>(())
            }
        }
    };
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let a = Running::start(consumer(&config, &group).max_buffered_bytes(64 * 1024).subscribe(&orders, slow_handler(seen_a.clone()))).await;
    wait_until(DEADLINE, "first member well into the stream", || async { seen_a.len() >= 300 }).await;
    let b = Running::start(consumer(&config, &group).max_buffered_bytes(64 * 1024).subscribe(&orders, slow_handler(seen_b.clone()))).await;
    wait_until(DEADLINE, "second member got partitions", || async { b.health.assigned_partitions() > 0 }).await;
    wait_until(DEADLINE * 2, "every event handled", || async {
        let (ca, cb) = (seen_a.counts(), seen_b.counts());
        events.iter().all(|e| ca.contains_key(&e.order_id) || cb.contains_key(&e.order_id))
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;

    let (ca, cb) = (seen_a.counts(), seen_b.counts());
    assert!(!cb.is_empty(), "the joining member handled events");
    let repeated: Vec<_> = events
        .iter()
        .filter(|e| ca.get(&e.order_id).copied().unwrap_or(0) + cb.get(&e.order_id).copied().unwrap_or(0) > 1)
        .map(|e| e.order_id.clone())
        .collect();
    // Revocation drains the current record and commits synchronously, so the new owner
    // starts right after the last handled record: nothing repeats.
    assert!(repeated.is_empty(), "{strategy}: {} events handled twice, e.g. {:?}", repeated.len(), &repeated[..repeated.len().min(5)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_joining_mid_stream_repeats_nothing_cooperative() {
    join_mid_stream("cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_joining_mid_stream_repeats_nothing_eager() {
    join_mid_stream("range").await;
}

/// A handler slower than `max.poll.interval.ms` must not push the member out of its group:
/// the main loop keeps polling while the handler works.
#[tokio::test(flavor = "multi_thread")]
async fn a_handler_slower_than_the_poll_interval_keeps_the_member_in_its_group() {
    // 6 s is the broker's minimum session timeout, so the smallest legal poll interval.
    let config = kafka().await.set("session.timeout.ms", "6000").set("max.poll.interval.ms", "6000");
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "slow", 1).await);
    let publisher = publisher(&config);
    for id in ["slow", "next"] {
        publisher.publish(&orders, &OrderPlaced::example(id, "c", 1)).await.expect("published");
    }
    let slow_done = Arc::new(AtomicBool::new(false));
    let seen = Seen::default();
    let handler = {
        let (seen, slow_done) = (seen.clone(), slow_done.clone());
        move |e: Envelope<OrderEvent>| {
            let (seen, slow_done) = (seen.clone(), slow_done.clone());
            async move {
                if order_id(&e.event) == "slow" {
                    tokio::time::sleep(Duration::from_secs(9)).await; // longer than max.poll.interval.ms
                    slow_done.store(true, Ordering::SeqCst);
                }
                seen.0.lock().unwrap().push(e);
                Ok::<_, HandlerError>(())
            }
        }
    };
    let running = Running::start(consumer(&config, &unique("g")).subscribe(&orders, handler)).await;
    wait_until(DEADLINE, "both events handled", || async { seen.len() >= 2 }).await;
    assert!(slow_done.load(Ordering::SeqCst));
    assert!(running.health.is_healthy(), "no max.poll.interval violation: {:?}", running.health.last_error());
    assert_eq!(running.health.assigned_partitions(), 1, "still a member with its partition");
    running.shutdown().await;
    let ids: Vec<String> = seen.all().iter().map(|e| order_id(&e.event).to_owned()).collect();
    assert_eq!(ids, vec!["slow", "next"], "handled once each, in order");
}
