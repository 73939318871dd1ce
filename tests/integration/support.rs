//! Shared fixtures: a recording handler, a running consumer, a private broker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_bus::{Consumer, ConsumerBuilder, ConsumerHealth, Envelope, HandlerError, KafkaConfig, Publisher, PublisherOptions};
use herald_shop::OrderEvent;
use herald_testkit::unique;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every event a handler saw, in order.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<Envelope<OrderEvent>>>>);

impl Seen {
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Envelope<OrderEvent>> {
        self.0.lock().unwrap().clone()
    }

    /// How many times each order id was seen.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for e in self.0.lock().unwrap().iter() {
            *counts.entry(order_id(&e.event).to_owned()).or_default() += 1;
        }
        counts
    }

    /// A handler that records every event.
    pub fn handler(&self) -> impl Fn(Envelope<OrderEvent>) -> futures::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static {
        let seen = self.clone();
        move |e| {
            seen.0.lock().unwrap().push(e);
            futures::future::ready(Ok(()))
        }
    }
}

pub fn order_id(e: &OrderEvent) -> &str {
    match e {
        OrderEvent::Placed(p) => &p.order_id,
        OrderEvent::Confirmed(c) => &c.order_id,
        OrderEvent::Cancelled(c) => &c.order_id,
    }
}

/// A consumer running on its own task.
pub struct Running {
    pub stop: CancellationToken,
    pub health: Arc<ConsumerHealth>,
    pub task: JoinHandle<Result<(), herald_bus::ConsumerError>>,
}

impl Running {
    pub async fn start(builder: ConsumerBuilder) -> Running {
        let consumer = builder.build().await.expect("consumer builds");
        let health = consumer.health();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(consumer.run(async move { token.cancelled().await }));
        Running { stop, health, task }
    }

    /// Graceful shutdown; panics if the consumer failed.
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("consumer stops within 60 s")
            .expect("consumer task")
            .expect("consumer ran without error");
    }
}

pub fn consumer(config: &KafkaConfig, group: &str) -> ConsumerBuilder {
    Consumer::builder(config.clone(), group)
        // Fast retries keep the tests quick; the policy itself is unit tested.
        .retry(herald_bus::RetryPolicy { max_attempts: 3, initial: Duration::from_millis(10), max: Duration::from_millis(50), ..Default::default() })
}

pub fn publisher(config: &KafkaConfig) -> Publisher {
    Publisher::new(config, PublisherOptions::new("/herald/tests")).expect("publisher")
}

pub const DEADLINE: Duration = Duration::from_secs(60);

/// A private broker (through `scripts/kafka` on free ports with its own run folder), so
/// stopping or reconfiguring it disturbs no other test. Stopped and removed on drop.
pub struct Broker {
    pub port: u16,
    pub controller_port: u16,
    pub home: PathBuf,
    /// Extra server.properties lines (`KAFKA_EXTRA_PROPERTIES`).
    pub extra_properties: String,
}

impl Broker {
    pub fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka")
    }

    pub fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        listener.local_addr().expect("address").port()
    }

    /// A broker on free ports, its run folder named after `name`.
    pub fn new(name: &str) -> Broker {
        let home = std::env::temp_dir().join(unique(name));
        Broker { port: Self::free_port(), controller_port: Self::free_port(), home, extra_properties: String::new() }
    }

    /// `scripts/kafka ACTION ARGS...` for this broker; panics with its output on failure.
    pub async fn run(&self, action: &str) {
        self.script_run(&[action]).await;
    }

    /// `scripts/kafka ARGS...` for this broker; panics with its output on failure.
    pub async fn script_run(&self, args: &[&str]) -> String {
        let mut command = Command::new("bash");
        command
            .arg(Self::script())
            .args(args)
            .env("KAFKA_EXTRA_PROPERTIES", &self.extra_properties)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("HERALD_KAFKA_HOME", &self.home);
        let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run scripts/kafka");
        assert!(
            output.status.success(),
            "scripts/kafka {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A configuration for its plaintext listener.
    pub fn config(&self) -> KafkaConfig {
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
