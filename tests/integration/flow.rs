//! Back-pressure: a partition paused because its worker fell behind is fetched again as
//! soon as it is resumed.

use std::time::{Duration, Instant};

use herald_bus::Topic;
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};

use crate::support::{consumer, publisher, Running, Seen};

/// librdkafka does not wake the thread that fetches a partition when the partition is
/// resumed; with every partition paused that thread sleeps up to a second, so each pause
/// longer than a fetch cost up to a second with nothing fetched (the runtime now wakes
/// it). A budget of a few records and a handler that takes 40 ms make the consumer pause
/// every few records (about 7) for longer than a fetch: before the wake-up the 200 events
/// took 31 s (31 pauses), with it 10 s (the handler's 8 s and the fetches).
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_partition_is_fetched_again_as_soon_as_it_is_resumed() {
    const EVENTS: usize = 200;
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "flow", 1).await);
    let events: Vec<OrderPlaced> = (0..EVENTS as i64).map(|n| OrderPlaced::example("o-1", "c", n)).collect();
    for result in publisher(&config).publish_all(&orders, &events).await {
        result.expect("published");
    }

    let seen = Seen::default();
    let record = seen.handler();
    let slow = move |e| {
        let recorded = record(e);
        async move {
            tokio::time::sleep(Duration::from_millis(40)).await; // the handler's own work
            recorded.await
        }
    };
    let started = Instant::now();
    // The smallest budget: a partition may hold 1 KiB, a few records.
    let running = Running::start(consumer(&config, &unique("g")).max_buffered_bytes(4096).subscribe(&orders, slow)).await;
    wait_until(Duration::from_secs(60), "every event handled", || async { seen.len() >= EVENTS }).await;
    let took = started.elapsed();
    let pauses = running.health.pauses();
    running.shutdown().await;

    assert!(pauses >= 20, "the budget made the consumer pause often: {pauses} pauses");
    assert!(took < Duration::from_secs(22), "{pauses} pauses took {took:?}: a resumed partition waited for its fetcher to wake up by itself");
    let totals: Vec<i64> = seen.all().iter().map(|e| if let OrderEvent::Placed(p) = &e.event { p.total_cents } else { -1 }).collect();
    assert_eq!(totals, (0..EVENTS as i64).collect::<Vec<_>>(), "each event once, in order");
}
