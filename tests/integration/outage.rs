//! A broker that goes away and comes back: the consumer keeps running, the publisher keeps
//! retrying, and no acknowledged event is lost.
//!
//! This test runs its own single-node broker (through `scripts/kafka` on free ports with a
//! private data folder), so stopping it disturbs no other test.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use herald_bus::{KafkaConfig, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{unique, wait_until};

use crate::support::{consumer, order_id, publisher, Running, Seen};

/// A private broker, stopped and its data removed on drop.
struct Broker {
    port: u16,
    controller_port: u16,
    home: PathBuf,
}

impl Broker {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka")
    }

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        listener.local_addr().expect("address").port()
    }

    fn new() -> Broker {
        let home = std::env::temp_dir().join(unique("herald-outage"));
        Broker { port: Self::free_port(), controller_port: Self::free_port(), home }
    }

    async fn run(&self, action: &str) {
        let mut command = Command::new("bash");
        command
            .arg(Self::script())
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("HERALD_KAFKA_HOME", &self.home);
        let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run scripts/kafka");
        assert!(
            output.status.success(),
            "scripts/kafka {action} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn config(&self) -> KafkaConfig {
        KafkaConfig::new(format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("HERALD_KAFKA_HOME", &self.home)
            .output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_loses_nothing() {
    let broker = Broker::new();
    broker.run("start").await;
    let config = broker.config();
    let name = unique("outage");
    herald_bus::admin::create_topics(&config, &[herald_bus::admin::TopicSpec::new(&name).partitions(3)]).await.expect("topic");
    let orders: Topic<OrderEvent> = Topic::named(name);
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
