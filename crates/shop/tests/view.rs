//! The order-status view as a process (`shop order-status`) against the real broker,
//! `kill -9`ed and started again: it reads on once its predecessor's session expired
//! (`--session-timeout`), not after librdkafka's default of 45 s.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_bus::admin::{self, TopicSpec};
use herald_bus::{Publisher, PublisherOptions, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, unique, wait_until};

/// The view's session timeout here (the broker's least, by default).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// librdkafka's default session timeout, which the view had before `--session-timeout`
/// applied to it.
const LIBRDKAFKA_SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// The view's process, killed when dropped (a failing test leaves nothing running).
struct View(Child);

impl View {
    /// `kill -9`.
    fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the view; returns it and its HTTP base address (printed as `http: ADDR`).
async fn start_view(bootstrap: &str, prefix: &str, store: &Path) -> (View, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["order-status", "--bootstrap", bootstrap, "--http", "127.0.0.1:0", "--no-register"])
        .args(["--topic-prefix", prefix, "--session-timeout", &format!("{}s", SESSION_TIMEOUT.as_secs())])
        .arg("--store")
        .arg(format!("sqlite:{}", store.display()))
        .env_remove("SHOP_TOPIC_PREFIX")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = View(child);
    let address = herald_testkit::printed_address(stdout).await;
    (child, address)
}

/// Whether the view at `base` has order `id`.
async fn has(http: &reqwest::Client, base: &str, id: &str) -> bool {
    http.get(format!("{base}/views/order_status/{id}")).timeout(Duration::from_secs(5)).send().await.is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_killed_and_restarted_reads_on_after_its_session_timeout() {
    let config = kafka().await;
    let prefix = format!("{}.", unique("shop.view"));
    let specs: Vec<TopicSpec> = ["shop.orders", "shop.inventory", "shop.payments"].iter().map(|t| TopicSpec::new(format!("{prefix}{t}")).partitions(6)).collect();
    admin::create_topics(&config, &specs).await.unwrap();
    let dir = std::env::temp_dir().join(unique("shop-view"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("view.db");
    let orders: Topic<OrderEvent> = Topic::named(format!("{prefix}shop.orders"));
    let publisher = Publisher::new(&config, PublisherOptions::new("/tests/shop-view")).unwrap();
    let http = reqwest::Client::new();

    let (view, base) = start_view(config.bootstrap(), &prefix, &store).await;
    publisher.publish(&orders, &OrderPlaced::example("before", "c-1", 1200)).await.unwrap();
    wait_until(Duration::from_secs(60), "the view has the first order", || has(&http, &base, "before")).await;

    view.kill9();
    let (view, base) = start_view(config.bootstrap(), &prefix, &store).await;
    let restarted = Instant::now();
    // Orders of 24 keys, spread over the topic's partitions.
    let after: Vec<String> = (0..24).map(|i| format!("after-{i}")).collect();
    for id in &after {
        publisher.publish(&orders, &OrderPlaced::example(id, "c-1", 1200)).await.unwrap();
    }
    let within = LIBRDKAFKA_SESSION_TIMEOUT / 2;
    wait_until(within, "the restarted view has every later order, within half librdkafka's default session timeout", || async {
        for id in &after {
            if !has(&http, &base, id).await {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("the restarted view read on after {:?} (session timeout {SESSION_TIMEOUT:?})", restarted.elapsed());
    assert!(has(&http, &base, "before").await, "what it applied before the kill is kept");
    view.kill9();
}
