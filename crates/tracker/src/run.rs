//! [`Runner`]: the tracker as a service: one projector per topic of the saga on one store,
//! the saga metrics, health.

use std::collections::HashSet;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use herald_bus::{KafkaConfig, Topic};
use herald_projector::{Projector, ProjectorError, StatusHandle, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::projection::Tracker;
use crate::query::{self, Filter, Summary, DEFAULT_STUCK_AFTER};
use crate::saga::{Observed, TrackedSaga};
use crate::state::State;

/// The tracker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// A projector failed to start or stopped with an error.
    #[error("tracker projector: {0}")]
    Projector(#[from] ProjectorError),
    /// Reading the store failed.
    #[error("tracker store: {0}")]
    Store(#[from] StoreError),
    /// A projector stopped by itself (another version of the view went live).
    #[error("tracker projector for {topic} stopped: {why}")]
    Stopped {
        /// Its topic.
        topic: String,
        /// Why.
        why: String,
    },
}

impl TrackerError {
    /// Whether running it again may succeed (a store or broker that was away).
    pub fn is_transient(&self) -> bool {
        matches!(self, TrackerError::Store(e) if e.is_transient())
    }
}

/// Builds the tracker of saga `S`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_tracker::{shop::Shop, Runner};
/// let store = herald_projector::store::open("sqlite:sagas.db")?;
/// let tracker = Runner::<Shop>::new(herald_bus::KafkaConfig::new("127.0.0.1:9092"), "shop-saga-tracker", store).build().await?;
/// tracker.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct Runner<S> {
    config: KafkaConfig,
    group: String,
    store: Arc<dyn Store>,
    topic_prefix: String,
    stuck_after: Duration,
    report_every: Duration,
    properties: Vec<(String, String)>,
    _saga: PhantomData<fn() -> S>,
}

impl<S: TrackedSaga> Runner<S> {
    /// The tracker of `S` in consumer group `group`, writing to `store`.
    pub fn new(config: KafkaConfig, group: impl Into<String>, store: Arc<dyn Store>) -> Self {
        Runner { config, group: group.into(), store, topic_prefix: String::new(), stuck_after: DEFAULT_STUCK_AFTER, report_every: Duration::from_secs(5), properties: Vec::new(), _saga: PhantomData }
    }

    /// Reads `PREFIX<topic>` for each of the saga's topics (tests, per-environment names).
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// No progress for longer than this makes a saga stuck (default 5 minutes).
    pub fn stuck_after(mut self, d: Duration) -> Self {
        self.stuck_after = d;
        self
    }

    /// How often the saga gauges are computed and new failures logged (default 5 s).
    pub fn report_every(mut self, d: Duration) -> Self {
        self.report_every = d;
        self
    }

    /// Sets a librdkafka property of every projector's consumer (say `session.timeout.ms`).
    pub fn kafka_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Builds one projector per topic, one after another (they migrate the same store),
    /// each in its own consumer group `GROUP.TOPIC` (members of one group subscribed to
    /// different topics would rebalance each other for nothing).
    pub async fn build(self) -> Result<Running<S>, TrackerError> {
        let tracker = Tracker::<S>::new();
        let mut projectors = Vec::new();
        for topic in S::topics() {
            let group = format!("{}.{topic}", self.group);
            let topic: Topic<Observed<S>> = Topic::named(format!("{}{topic}", self.topic_prefix));
            let builder = Projector::builder(self.config.clone(), group, &topic, tracker.clone(), self.store.clone());
            let builder = self.properties.iter().fold(builder, |b, (k, v)| b.kafka_property(k, v));
            projectors.push(builder.build().await?);
        }
        Ok(Running { projectors, store: self.store, stuck_after: self.stuck_after, report_every: self.report_every })
    }
}

/// A built tracker, ready to run.
pub struct Running<S: TrackedSaga> {
    projectors: Vec<Projector<Observed<S>, Tracker<S>>>,
    store: Arc<dyn Store>,
    stuck_after: Duration,
    report_every: Duration,
}

impl<S: TrackedSaga> Running<S> {
    /// The consumer groups its projectors read in, one per topic (`GROUP.TOPIC`).
    pub fn consumer_groups(&self) -> Vec<String> {
        self.projectors.iter().map(|p| p.group().to_owned()).collect()
    }

    /// Its health: healthy while every projector runs.
    pub fn health(&self) -> Health {
        Health(self.projectors.iter().map(Projector::status).collect())
    }

    /// `GET /sagas` and `GET /sagas/{id}` over its store ([`crate::http`]).
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.store.clone(), self.stuck_after)
    }

    /// Runs every projector until `shutdown` completes or one of them stops, then stops
    /// them all in order. Meanwhile, every `report_every`: the gauges
    /// `herald_saga_sagas{saga,state}` and `herald_saga_guarantee_violations{saga}`, and a
    /// warning for each saga newly found failed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), TrackerError> {
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for projector in self.projectors {
            let token = cancel.clone();
            let topic = projector.status().get().topic;
            tasks.spawn(async move { (topic, projector.run(token.cancelled_owned()).await) });
        }
        let report = report::<S>(self.store.clone(), self.stuck_after, self.report_every);
        tokio::pin!(shutdown, report);
        let mut first: Option<TrackerError> = None;
        tokio::select! {
            _ = &mut shutdown => {}
            never = &mut report => match never {},
            Some(done) = tasks.join_next() => first = stopped(done),
        }
        cancel.cancel();
        while let Some(done) = tasks.join_next().await {
            if let (None, Some(e)) = (&first, stopped(done)) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn stopped(done: Result<(String, Result<herald_projector::Stopped, ProjectorError>), tokio::task::JoinError>) -> Option<TrackerError> {
    match done {
        Ok((_, Ok(herald_projector::Stopped::Shutdown))) => None,
        Ok((topic, Ok(other))) => Some(TrackerError::Stopped { topic, why: format!("{other:?}") }),
        Ok((_, Err(e))) => Some(e.into()),
        Err(e) => Some(TrackerError::Stopped { topic: String::new(), why: e.to_string() }),
    }
}

/// How many failed sagas (the most recently active) each report reads to warn of new ones.
const FAILED_LISTED: usize = 10_000;

/// The sagas of `failed` (this report's failed sagas) not in `reported`, the ones warned of
/// before; `reported` becomes the ids of `failed`, so it never holds more than one report's
/// list. A saga that leaves the list (compensated late, or pushed out by
/// [`FAILED_LISTED`] more recently active ones) and comes back is warned of again.
pub(crate) fn newly_failed<'a>(reported: &mut HashSet<String>, failed: &'a [Summary]) -> Vec<&'a Summary> {
    let new = failed.iter().filter(|s| !reported.contains(&s.id)).collect();
    *reported = failed.iter().map(|s| s.id.clone()).collect();
    new
}

/// Every `every`: the saga gauges and a warning per newly failed saga. Never ends.
async fn report<S: TrackedSaga>(store: Arc<dyn Store>, stuck_after: Duration, every: Duration) -> std::convert::Infallible {
    let mut reported: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let store = store.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut conn = store.connect()?;
            let now = chrono::Utc::now();
            let counts = query::counts(&mut *conn, now, stuck_after)?;
            let failed = query::list(&mut *conn, &Filter { state: Some(State::Failed), stuck_after, limit: FAILED_LISTED, ..Filter::default() }, now)?;
            Ok((counts, failed))
        })
        .await;
        match read {
            Ok(Ok((counts, failed))) => {
                for (state, n) in counts {
                    metrics::gauge!("herald_saga_sagas", "saga" => S::NAME, "state" => state.as_str()).set(n as f64);
                    // Every failed saga, counted by the database (the list below is capped).
                    if state == State::Failed {
                        metrics::gauge!("herald_saga_guarantee_violations", "saga" => S::NAME).set(n as f64);
                    }
                }
                for saga in newly_failed(&mut reported, &failed) {
                    tracing::warn!(saga = S::NAME, id = %saga.id, subject = %saga.subject, reason = saga.reason.as_deref().unwrap_or(""), "saga guarantee violated");
                }
            }
            Ok(Err(e)) => tracing::warn!(saga = S::NAME, error = %e, "cannot read the tracker's store for its metrics"),
            Err(e) => tracing::warn!(saga = S::NAME, error = %e, "tracker report task failed"),
        }
    }
}

/// The tracker's health: every projector running.
#[derive(Clone)]
pub struct Health(Vec<StatusHandle>);

impl herald_ops::HealthCheck for Health {
    fn check(&self) -> (bool, serde_json::Value) {
        let statuses: Vec<_> = self.0.iter().map(StatusHandle::get).collect();
        let healthy = statuses.iter().all(|s| s.running);
        let details = statuses.iter().map(|s| serde_json::json!({"topic": s.topic, "running": s.running, "lag": s.total_lag, "last_error": s.last_error})).collect();
        (healthy, serde_json::Value::Array(details))
    }
}
