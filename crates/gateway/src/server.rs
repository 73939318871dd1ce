//! [`Gateway`]: the routes, the operations endpoints and the server.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use herald_bus::schema::SchemaSet;
use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
use herald_ops::{HealthCheck, MetricsHandle};

use crate::auth::Authenticator;
use crate::idempotency::{Idempotency, LogError};
use crate::breaker::{Breaker, State};
use crate::config::{Config, ConfigError, Settings};
use crate::problem::Problem;
use crate::query::backends::Backends;
use crate::reachability::Reachability;
use crate::query::QueryRoute;
use crate::route::{self, Route};
use crate::sender::Sender;

/// What the handlers share.
pub(crate) struct App {
    pub(crate) settings: Settings,
    pub(crate) routes: Vec<Arc<Route>>,
    pub(crate) sender: Sender,
    pub(crate) auth: Authenticator,
    pub(crate) idempotency: Idempotency,
    pub(crate) queries: Vec<Arc<QueryRoute>>,
    pub(crate) backends: Option<Arc<Backends>>,
    pub(crate) dashboard: Option<Arc<crate::dashboard::Dashboard>>,
    /// Whether the cluster answers, asked while serving.
    pub(crate) reachability: Arc<Reachability>,
}

/// Choices made by the binary (or a test) rather than the file.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Overrides `[gateway] topic_prefix`.
    pub topic_prefix: Option<String>,
    /// What `/metrics` renders (the process's Prometheus recorder); without it `/metrics`
    /// is empty.
    pub metrics: Option<MetricsHandle>,
    /// The service registry the query routes find their instances in (default: the topic
    /// prefix + `herald.services`, other settings default).
    pub registry: Option<herald_services::Settings>,
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Kafka producer could not be created.
    #[error("cannot create the producer: {0}")]
    Producer(#[from] herald_bus::PublishError),
    /// The idempotency topic could not be created or read.
    #[error(transparent)]
    Idempotency(#[from] LogError),
    /// The service registry (for the query routes) could not be read.
    #[error("service registry: {0}")]
    Registry(#[from] herald_services::RegistryError),
    /// The dashboard's Kafka clients could not be created.
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::DashboardError),
}

/// The HTTP gateway: build it with [`Gateway::new`], serve it with [`Gateway::serve`] (or
/// take its [`Gateway::router`]).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_gateway::{Config, Gateway, Options};
/// let config = Config::load("crates/gateway/shop.toml".as_ref())?;
/// let gateway = Gateway::new(config, &herald_bus::KafkaConfig::new("127.0.0.1:9092"), Options::default()).await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// gateway.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Gateway {
    app: Arc<App>,
    metrics: MetricsHandle,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("routes", &self.app.routes.len()).finish_non_exhaustive()
    }
}

impl Gateway {
    /// Loads the schemas, checks the routes and credentials, creates the producer
    /// (`acks=all`, idempotent; `message.timeout.ms` = the deadline and `linger.ms` = 0
    /// unless `kafka` sets them), and loads the idempotency records (creating their topic
    /// if missing).
    pub async fn new(config: Config, kafka: &KafkaConfig, options: Options) -> Result<Gateway, GatewayError> {
        let mut settings = config.gateway.clone();
        if let Some(prefix) = options.topic_prefix {
            settings.topic_prefix = prefix;
        }
        let schemas = SchemaSet::load_dir(&settings.schemas)
            .map_err(|e| ConfigError::Schemas { path: settings.schemas.clone(), reason: e.to_string() })?;
        let routes = route::compile(&config.routes, &schemas, &settings.topic_prefix)?;
        let queries = crate::query::compile(&config.queries, &config.discovery, settings.deadline_ms)?;
        if let Some(q) = queries.iter().find(|q| routes.iter().any(|r| r.method == axum::http::Method::GET && r.path == q.path)) {
            return Err(ConfigError::Invalid(format!("query {}: GET {} is also an event route", q.name, q.path)).into());
        }
        let deadline = Duration::from_millis(settings.deadline_ms.max(1));
        // The producer's own settings; the consumers (idempotency log, service registry,
        // dashboard) get `kafka` as given (librdkafka warns about producer properties on a
        // consumer at every start).
        let mut producing = kafka.clone();
        if producing.get("message.timeout.ms").is_none() {
            producing = producing.set("message.timeout.ms", settings.deadline_ms.max(10).to_string());
        }
        // Each request waits for its event's acknowledgement: waiting to batch would add
        // to every answer (the publisher's 5 ms doubled the median in the bench), and
        // concurrent requests still share batches while one is in flight.
        if producing.get("linger.ms").is_none() {
            producing = producing.set("linger.ms", "0");
        }
        let publisher = Publisher::new(&producing, PublisherOptions::new(settings.source.clone()))?;
        let auth = Authenticator::new(&config.auth, &config.base)?;
        let idempotency_topic = format!("{}{}", settings.topic_prefix, config.idempotency.topic);
        let ttl = Duration::from_secs(config.idempotency.ttl_hours.max(1) * 3600);
        let reachability = Arc::new(Reachability::new(idempotency_topic.clone()));
        let idempotency = Idempotency::start(kafka, idempotency_topic, ttl, publisher.clone(), deadline).await?;
        let breaker = Arc::new(Breaker::new(config.breaker));
        let sender = Sender::new(publisher, breaker, deadline);
        let registry = options.registry.unwrap_or_else(|| herald_services::Settings::default().topic(format!("{}{}", settings.topic_prefix, herald_services::settings::DEFAULT_TOPIC)));
        let http = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(30)).redirect(reqwest::redirect::Policy::none()).build().map_err(|e| ConfigError::Invalid(format!("HTTP client: {e}")))?;
        let (backends, directory) = if queries.is_empty() {
            (None, None)
        } else {
            let directory = Arc::new(herald_services::Directory::start(kafka, &registry).await?);
            let services = queries.iter().map(|q| q.service.clone()).collect();
            let backends = Backends::new(directory.clone(), services, config.discovery, http.clone());
            if !backends.caught_up(Duration::from_secs(10)).await {
                tracing::warn!(topic = %registry.topic, "the service registry was not read to its end within 10 s; query routes may answer 503 until it is");
            }
            backends.start_checks();
            (Some(backends), Some(directory))
        };
        let dashboard = if config.dashboard.enabled {
            Some(crate::dashboard::Dashboard::new(crate::dashboard::Parts {
                config: config.dashboard.clone(),
                prefix: settings.topic_prefix.clone(),
                auth: auth.clone(),
                kafka: kafka.clone(),
                registry,
                directory,
                publisher: sender.publisher().clone(),
                schemas,
                http,
                deadline,
            })?)
        } else {
            None
        };
        let app = Arc::new(App { settings, routes, sender, auth, idempotency, queries, backends, dashboard, reachability });
        let metrics = options.metrics.unwrap_or_else(|| metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle());
        Ok(Gateway { app, metrics })
    }

    /// The query routes being served.
    pub fn queries(&self) -> &[Arc<QueryRoute>] {
        &self.app.queries
    }

    /// The routes being served.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.app.routes
    }

    /// Idempotency records this instance knows (its own and those read from the topic).
    pub fn idempotency_records(&self) -> usize {
        self.app.idempotency.len()
    }

    /// The publisher (shared with the handlers).
    pub fn publisher(&self) -> &Publisher {
        self.app.sender.publisher()
    }

    /// The router: every configured route, `/health`, `/metrics`, `/openapi.json`, the dashboard
    /// (`/ui`, unless `[dashboard] enabled = false`), and problem JSON for
    /// unknown paths (`404`) and methods (`405`).
    pub fn router(&self) -> Router {
        let mut by_path: BTreeMap<&str, MethodRouter> = BTreeMap::new();
        for route in &self.app.routes {
            let Ok(filter) = MethodFilter::try_from(route.method.clone()) else { continue };
            let (app, r) = (self.app.clone(), route.clone());
            let handler = on(filter, move |request: Request| crate::handler::serve(app, r, request));
            let entry = by_path.remove(route.path.as_str());
            by_path.insert(route.path.as_str(), match entry {
                Some(existing) => existing.merge(handler),
                None => handler,
            });
        }
        for query in &self.app.queries {
            let (app, q) = (self.app.clone(), query.clone());
            let handler = on(MethodFilter::GET, move |request: Request| crate::query::forward::serve(app, q, request));
            let entry = by_path.remove(query.path.as_str());
            by_path.insert(query.path.as_str(), match entry {
                Some(existing) => existing.merge(handler),
                None => handler,
            });
        }
        let mut router = Router::new();
        for (path, methods) in by_path {
            router = router.route(path, methods);
        }
        let health = Health { app: self.app.clone() };
        let openapi = Arc::new(crate::openapi::document(&self.app.routes, &self.app.queries, &self.app.auth));
        router
            .route("/openapi.json", axum::routing::get(move || async move { axum::Json((*openapi).clone()) }))
            .merge(herald_ops::router(self.metrics.clone(), health))
            .merge(self.app.dashboard.as_ref().map(|d| d.router()).unwrap_or_default())
            .fallback(|request: Request| async move { unmatched(Problem::not_found(request.uri().path())) })
            .method_not_allowed_fallback(|request: Request| async move {
                unmatched(Problem::method_not_allowed(request.method().as_str(), request.uri().path()))
            })
    }

    /// Serves until `shutdown` completes, then finishes the requests in progress and
    /// flushes the producer. While serving, asks the cluster whether it answers, for
    /// `/health` ([`Reachability`]).
    pub async fn serve(self, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (reachability, publisher) = (self.app.reachability.clone(), self.publisher().clone());
        let checking = tokio::spawn(async move { reachability.run(publisher).await });
        let served = herald_ops::serve_router(listener, self.router(), shutdown).await;
        checking.abort();
        if let Some(backends) = &self.app.backends {
            backends.shutdown().await;
        }
        if let Err(e) = self.publisher().flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "flushing the producer at shutdown");
        }
        served
    }
}

fn unmatched(problem: Problem) -> axum::response::Response {
    crate::metrics::request("unmatched", problem.status, Duration::ZERO);
    axum::response::IntoResponse::into_response(problem)
}

/// `/health`: unhealthy while the breaker is open, the cluster does not answer
/// ([`Reachability`]), the idempotency topic's reader is cut off, or the producer failed
/// fatally.
struct Health {
    app: Arc<App>,
}

impl HealthCheck for Health {
    fn check(&self) -> (bool, serde_json::Value) {
        let breaker = self.app.sender.breaker_state();
        let fatal = self.app.sender.publisher().fatal_error();
        crate::metrics::breaker(breaker);
        let (reachable, kafka) = self.app.reachability.report();
        let reader = self.app.idempotency.reader_error();
        let healthy = breaker != State::Open && reachable && fatal.is_none() && reader.is_none();
        let backends = self.app.backends.as_ref().map(|b| b.report()).unwrap_or_default();
        (
            healthy,
            serde_json::json!({ "breaker": breaker.as_str(), "kafka": kafka, "idempotency_reader_error": reader, "producer_fatal_error": fatal, "routes": self.app.routes.len(), "queries": self.app.queries.len(), "backends": backends }),
        )
    }
}
