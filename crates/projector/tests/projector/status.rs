//! Status: positions and lag per partition, from the running process and from the store.

use herald_bus::Topic;
use herald_projector::store;
use herald_shop::OrderEvent;
use herald_testkit::{kafka, topic, unique, wait_until};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_positions_and_lag_per_partition() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.status", 3).await);
    let publisher = publisher(&config);
    publish_orders(&publisher, &orders, 400, 0..300, 5).await;
    // Before any projector ran: everything is lag.
    let before = herald_projector::status::read(store::open(&store_url).expect("store"), &config, "order_totals", None, orders.name())
        .await
        .expect("status");
    assert_eq!(before.total_lag, 400);
    assert_eq!(before.partitions.len(), 3);
    assert!(before.partitions.iter().all(|p| p.position.is_none()));

    let group = unique("g.status");
    let proc = start(&Opts::new(orders.name(), &group, &store_url)).await;
    wait_caught_up(&config, &store_url, orders.name(), "caught up").await;
    let http = proc.http.clone();
    wait_until(DEADLINE, "live status shows no lag", || async {
        let Ok(r) = reqwest::get(format!("http://{http}/status")).await else { return false };
        let Ok(v) = r.json::<serde_json::Value>().await else { return false };
        v["applied_total"] == 400 && v["total_lag"] == 0 && v["partitions"].as_array().is_some_and(|p| p.len() == 3)
    })
    .await;
    // The lag gauges are set by the status refresh (every 2 s), which may not have run for
    // every partition yet when /status first shows no lag: wait until all three are out.
    wait_until(DEADLINE, "a lag gauge for each partition", || async {
        let Ok(r) = reqwest::get(format!("http://{http}/metrics")).await else { return false };
        r.text().await.is_ok_and(|m| m.lines().filter(|l| l.starts_with("herald_projector_lag{")).count() == 3)
    })
    .await;
    let metrics = reqwest::get(format!("http://{http}/metrics")).await.expect("metrics").text().await.expect("text");
    for metric in ["herald_projector_events_total", "herald_projector_batches_total", "herald_projector_batch_seconds", "herald_projector_lag"] {
        assert!(metrics.contains(metric), "{metric} missing:\n{metrics}");
    }
    // The lag of each partition names its topic (a projection may read several).
    let topic_label = format!("topic=\"{}\"", orders.name());
    let lags: Vec<&str> = metrics.lines().filter(|l| l.starts_with("herald_projector_lag{")).collect();
    assert!(lags.len() == 3 && lags.iter().all(|l| l.contains(&topic_label)), "{lags:?}");
    // The lag is refreshed every 2 s through one Kafka client kept for the projector's
    // life, not a new client (and connections, handshakes) each time. Let several
    // refreshes pass, then count the clients opened.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let metrics = reqwest::get(format!("http://{http}/metrics")).await.expect("metrics").text().await.expect("text");
    let opened = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_projector_status_clients_opened_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(opened, Some(1.0), "one status client for the projector's life:\n{metrics}");
    // Positions are mirrored to the group's committed offsets, for lag tools.
    wait_until(DEADLINE, "committed offsets mirror the positions", || async {
        herald_testkit::committed(&config, &group, orders.name(), 3).await.iter().map(|o| o.unwrap_or(0)).sum::<i64>() == 400
    })
    .await;
    proc.terminate().await;
    let after = herald_projector::status::read(store::open(&store_url).expect("store"), &config, "order_totals", None, orders.name())
        .await
        .expect("status");
    assert_eq!(after.total_lag, 0);
    assert_eq!(after.partitions.iter().filter_map(|p| p.position).sum::<i64>(), 400);
}

/// A projector whose future is dropped with its runtime (a test that ends, a process that
/// returns from `main` without stopping it) must let the runtime shut down.
#[test]
fn dropping_the_runtime_under_a_running_projector_lets_it_shut_down() {
    herald_testkit::runtime_drops_within(DEADLINE, || async {
        let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
        let config = kafka().await;
        let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.dropped", 3).await);
        publish_orders(&publisher(&config), &orders, 200, 0..150, 9).await;
        let store = store::open(&store_url).expect("store");
        let projector = herald_projector::Projector::builder(config.clone(), unique("g.dropped"), &orders, crate::projection::OrderTotals, store).build().await.expect("projector");
        let status = projector.status();
        tokio::spawn(projector.run(std::future::pending()));
        wait_until(DEADLINE, "some applied", || async { status.get().applied_total > 0 }).await;
        // Left running: the runtime is dropped under it.
    });
}

/// Records deleted from the log (`kafka-delete-records`, retention) before the projection
/// applied them: the client finds the stored position out of range and starts at the
/// log's start, skipping them. Before, nothing said so (`/status` clean, lag 0); now
/// `/status` names them and `herald_projector_deleted_unapplied_total` counts them.
#[tokio::test(flavor = "multi_thread")]
async fn records_deleted_before_they_were_applied_are_reported_not_skipped_silently() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::{Offset, TopicPartitionList};
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.deleted", 1).await);
    let publisher = publisher(&config);
    publish_orders(&publisher, &orders, 100, 0..20, 7).await;
    let group = unique("g.deleted");
    let proc = start(&Opts::new(orders.name(), &group, &store_url)).await;
    wait_caught_up(&config, &store_url, orders.name(), "the first 100 applied").await;
    proc.terminate().await;

    // 100 more while it is stopped, then the first 150 deleted: 50 it never applied.
    publish_orders(&publisher, &orders, 100, 0..20, 8).await;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("admin client");
    let mut before = TopicPartitionList::new();
    before.add_partition_offset(orders.name(), 0, Offset::Offset(150)).expect("offset");
    let deleted = admin.delete_records(&before, &AdminOptions::new()).await.expect("records deleted");
    assert!(deleted.elements().iter().all(|e| e.error().is_ok()), "{deleted:?}");

    let proc = start(&Opts::new(orders.name(), &group, &store_url)).await;
    wait_caught_up(&config, &store_url, orders.name(), "caught up with what the log still has").await;
    let http = proc.http.clone();
    wait_until(DEADLINE, "/status names the records deleted before they were applied", || async {
        let Ok(r) = reqwest::get(format!("http://{http}/status")).await else { return false };
        let Ok(v) = r.json::<serde_json::Value>().await else { return false };
        v["partitions"][0]["last_error"].as_str().is_some_and(|e| e.contains("records 100 to 149 were deleted"))
    })
    .await;
    let metrics = reqwest::get(format!("http://{http}/metrics")).await.expect("metrics").text().await.expect("text");
    let counted = metrics.lines().find(|l| l.starts_with("herald_projector_deleted_unapplied_total{")).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok());
    assert_eq!(counted, Some(50.0), "{metrics}");
    proc.terminate().await;
}
