//! Whether the gateway reaches its Kafka cluster, for `/health`.
//!
//! The breaker opens only when requests fail, so it cannot say this alone: an idle
//! gateway whose brokers were gone reported healthy for as long as the outage lasted, and a
//! busy one turned healthy again between breaker cycles (open for `open_ms`, then half-open
//! while its probe request waited), so a load balancer kept sending it requests that could
//! only end in 503. [`Reachability`] asks the cluster itself: every [`INTERVAL`], a metadata
//! request for one topic (the idempotency log's) on the producer's own client, the
//! connections its sends use. `/health` is unhealthy while the last one went unanswered.
//!
//! An unanswered check also gives the producer its bootstrap servers back
//! ([`herald_bus::rebootstrap`]): librdkafka can leave a client with no broker at all after
//! a broker was fenced for a moment, and such a gateway answered `503` for good.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_bus::Publisher;

/// How often the cluster is asked.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// How long an answer is waited for.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The last answer of the cluster (see the module docs).
///
/// ```
/// use herald_gateway::reachability::Reachability;
/// let reachability = Reachability::new("gateway.idempotency".to_owned());
/// // Healthy until a check goes unanswered: the gateway reached the cluster to start.
/// let (healthy, report) = reachability.report();
/// assert!(healthy);
/// assert_eq!(report["checked"], false);
/// ```
///
/// A gateway runs [`Reachability::run`] beside its server, with its publisher.
#[derive(Debug)]
pub struct Reachability {
    topic: String,
    last: Mutex<Option<(Result<(), String>, Instant)>>,
}

impl Reachability {
    /// Asks about `topic` (one the gateway's client may read the metadata of), giving the
    /// client its bootstrap servers back when unanswered.
    pub fn new(topic: String) -> Self {
        Reachability { topic, last: Mutex::new(None) }
    }

    /// Whether the cluster answered the last request (true before the first: the gateway
    /// reached it to start), and the report for `/health`.
    pub fn report(&self) -> (bool, serde_json::Value) {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            None => (true, serde_json::json!({ "reachable": true, "checked": false })),
            Some((answered, at)) => (
                answered.is_ok(),
                serde_json::json!({ "reachable": answered.is_ok(), "checked_ms_ago": at.elapsed().as_millis() as u64, "error": answered.as_ref().err() }),
            ),
        }
    }

    /// Asks once, on a blocking thread (librdkafka's metadata call waits for the answer).
    pub async fn check(&self, publisher: &Publisher) {
        let (producer, topic) = (publisher.producer(), self.topic.clone());
        let answered = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer as _;
            herald_bus::rebootstrap::check(producer.client(), &topic, TIMEOUT)
                .map(drop)
                .map_err(|e| format!("the cluster did not answer a metadata request within {TIMEOUT:?}: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the check failed: {e}")));
        if let Err(e) = &answered {
            tracing::warn!(error = %e, "Kafka unreachable: /health reports unhealthy");
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((answered, Instant::now()));
    }

    /// Asks every [`INTERVAL`] until dropped.
    pub async fn run(&self, publisher: Publisher) {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.check(&publisher).await;
        }
    }
}
