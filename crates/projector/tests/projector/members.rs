//! Three projector processes share a group while members join, leave (SIGTERM) and die
//! (SIGKILL) during the stream: the view still equals the fold of the log.

use std::time::Duration;

use herald_bus::Topic;
use herald_shop::OrderEvent;
use herald_testkit::{kafka, topic, unique};

use crate::support::*;

async fn members_come_and_go(backend: Backend) {
    let Some(store) = fresh_store(backend).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.members", 6).await);
    let publisher = publisher(&config);
    let opts = Opts::new(orders.name(), &unique("g.members"), &store);
    publish_orders(&publisher, &orders, 1500, 0..1000, 7).await;
    publish_poison(&publisher, &orders, 1, 1, "m").await;

    let a = start(&opts).await;
    let progressed = |p: &Proc, n: u64| {
        let http = p.http.clone();
        async move {
            let started = std::time::Instant::now();
            while started.elapsed() < DEADLINE {
                let applied = reqwest::get(format!("http://{http}/status")).await.ok();
                let v: Option<serde_json::Value> = match applied {
                    Some(r) => r.json().await.ok(),
                    None => None,
                };
                if v.is_some_and(|v| v["applied_total"].as_u64().unwrap_or(0) >= n && v["partitions"].as_array().is_some_and(|p| !p.is_empty())) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("no progress");
        }
    };
    progressed(&a, 200).await;
    let b = start(&opts).await;
    let c = start(&opts).await;
    // Once B and C own partitions, the next events are theirs to apply.
    progressed(&b, 0).await;
    progressed(&c, 0).await;
    publish_orders(&publisher, &orders, 1500, 0..1000, 8).await;
    progressed(&b, 1).await;
    // B leaves cleanly, C dies, D joins, all while events keep arriving.
    b.terminate().await;
    publish_orders(&publisher, &orders, 1000, 0..1000, 9).await;
    progressed(&c, 1).await;
    c.kill9().await;
    let d = start(&opts).await;
    publish_orders(&publisher, &orders, 1000, 0..1000, 10).await;
    publish_poison(&publisher, &orders, 1, 0, "n").await;
    wait_caught_up(&config, &store, orders.name(), "the remaining members catch up").await;
    a.terminate().await;
    d.terminate().await;

    let (expected, poison) = fold_topic(&config, orders.name()).await;
    assert_eq!(non_zero(&read_view(&store).await), non_zero(&expected), "{backend:?}: view equals the fold");
    assert_eq!(stored_dead_letters(&store).await.len(), poison);
}

#[tokio::test(flavor = "multi_thread")]
async fn members_joining_and_leaving_keep_the_sqlite_view_exact() {
    members_come_and_go(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn members_joining_and_leaving_keep_the_postgres_view_exact() {
    members_come_and_go(Backend::Postgres).await;
}
