//! Poison records go to the dead-letter topic with their reason, the view is right for
//! every other record; with the pause policy the partition stops until an operator acts.

use herald_bus::dead_letter::{self, DeadLetter};
use herald_bus::Topic;
use herald_shop::OrderEvent;
use herald_testkit::{kafka, topic, unique, wait_until};

use crate::support::*;

async fn poison_is_dead_lettered(backend: Backend) {
    let Some(store) = fresh_store(backend).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.poison", 2).await);
    let publisher = publisher(&config);
    publish_orders(&publisher, &orders, 300, 0..200, 1).await;
    publish_poison(&publisher, &orders, 2, 2, "a").await;
    publish_orders(&publisher, &orders, 300, 0..200, 2).await;
    let proc = start(&Opts::new(orders.name(), &unique("g.poison"), &store)).await;
    wait_caught_up(&config, &store, orders.name(), "caught up past the poison").await;

    let (expected, poison) = fold_topic(&config, orders.name()).await;
    assert_eq!(poison, 4);
    assert_eq!(non_zero(&read_view(&store).await), non_zero(&expected), "{backend:?}: the view is right for every other event");
    // The view is served over HTTP too.
    let (customer, totals) = expected.iter().next().expect("a customer");
    assert_eq!(http_view(&proc, customer).await, Some(*totals));
    proc.terminate().await;

    let dead = stored_dead_letters(&store).await;
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert_eq!(dead.iter().filter(|d| d.2 == "decode").count(), 2);
    assert!(dead.iter().filter(|d| d.2 == "handler").all(|d| d.3.contains("negative total")), "{dead:?}");
    let dlq = dead_letter::topic_for(orders.name());
    let records = herald_testkit::read_all(&config, &dlq, 4, DEADLINE).await;
    let letters: Vec<DeadLetter> = records.iter().filter_map(DeadLetter::parse).collect();
    assert_eq!(letters.len(), 4, "four dead letters in {dlq}");
    for l in &letters {
        assert!(!l.reason.is_empty() && l.topic == orders.name());
        assert!(dead.iter().any(|d| d.0 == l.partition && d.1 == l.offset), "{l:?} recorded in the store");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_events_are_dead_lettered_with_reasons_sqlite() {
    poison_is_dead_lettered(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_events_are_dead_lettered_with_reasons_postgres() {
    poison_is_dead_lettered(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_pause_policy_a_poison_event_opens_the_circuit_until_skipped() {
    let Some(store) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.pause", 1).await);
    let publisher = publisher(&config);
    publish_orders(&publisher, &orders, 50, 0..40, 3).await;
    publish_poison(&publisher, &orders, 0, 1, "p").await;
    publish_orders(&publisher, &orders, 50, 0..40, 4).await;
    let mut opts = Opts::new(orders.name(), &unique("g.pause"), &store);
    opts.args = vec!["--on-poison".into(), "pause".into()];
    let proc = start(&opts).await;
    let http = proc.http.clone();
    let status = || async {
        let v: serde_json::Value = reqwest::get(format!("http://{http}/status")).await.ok()?.json().await.ok()?;
        Some(v)
    };
    wait_until(DEADLINE, "the partition's circuit opens at the poison event", || async {
        status().await.is_some_and(|v| v["partitions"][0]["state"] == "circuit-open")
    })
    .await;
    let v = status().await.expect("status");
    assert_eq!(v["partitions"][0]["position"].as_i64(), Some(50), "stopped right before the poison event: {v}");
    assert!(v["partitions"][0]["last_error"].as_str().is_some_and(|e| e.contains("negative total")), "{v}");
    let health = reqwest::get(format!("http://{http}/health")).await.expect("health");
    assert_eq!(health.status(), 200);
    // Still healthy, and not parked, once the wait outlasts the dead-letter layer's stall
    // report (10 s): it waits for an operator, as configured, not for a dead-letter topic
    // (before, /health turned 503 asking whether the topic was missing).
    wait_until(DEADLINE, "the log says the partition waits for an operator", || async { std::fs::read_to_string(&proc.log).unwrap_or_default().contains("waiting for an operator to retry or skip it") }).await;
    let health = reqwest::get(format!("http://{http}/health")).await.expect("health");
    assert_eq!(health.status(), 200, "{}", health.text().await.unwrap_or_default());
    assert!(!tail(&proc.log).contains("is not written after"), "{}", tail(&proc.log));
    assert_eq!(status().await.expect("status")["partitions"][0]["position"].as_i64(), Some(50), "still stopped");
    // A partition that is not waiting: refused, saying why.
    let refused = reqwest::Client::new().post(format!("http://{http}/partitions/7/retry")).send().await.expect("retry");
    assert_eq!(refused.status(), 409);
    let why = refused.text().await.expect("a reason");
    assert!(why.contains("partition 7 is not stopped at a record") && why.contains("--on-poison pause"), "{why}");
    let skipped = reqwest::Client::new().post(format!("http://{http}/partitions/0/skip")).send().await.expect("skip");
    assert_eq!(skipped.status(), 202);
    assert!(skipped.text().await.expect("a body").contains("partition 0: its record is dead-lettered"));
    wait_caught_up(&config, &store, orders.name(), "moves on after the operator's skip").await;
    proc.terminate().await;
    let (expected, poison) = fold_topic(&config, orders.name()).await;
    assert_eq!(poison, 1);
    assert_eq!(non_zero(&read_view(&store).await), non_zero(&expected));
    assert_eq!(stored_dead_letters(&store).await.len(), 1);
}
