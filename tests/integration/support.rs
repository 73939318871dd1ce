//! Shared fixtures: a recording handler, a running consumer, a private broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_bus::{Consumer, ConsumerBuilder, ConsumerHealth, Envelope, HandlerError, KafkaConfig, Publisher, PublisherOptions};
use herald_shop::OrderEvent;
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

    /// Runs `checks`, then shuts down gracefully also when they panicked, and passes the
    /// panic on. For tests whose consumer may be left with no broker: one dropped without
    /// its shutdown leaves its close waiting on a thread of its own for a group coordinator
    /// that does not answer, for as long as the test process lives.
    pub async fn shutdown_after(self, checks: impl std::future::Future<Output = ()>) {
        use futures::FutureExt as _;
        let checked = std::panic::AssertUnwindSafe(checks).catch_unwind().await;
        if let Err(panic) = checked {
            self.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(60), self.task).await;
            std::panic::resume_unwind(panic);
        }
        self.shutdown().await;
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

pub use herald_testkit::PrivateBroker as Broker;
