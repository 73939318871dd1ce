//! The dashboard: one web page at `/ui` showing the pipeline as it runs, for admins.
//!
//! The page (`page.html`, one file of HTML, CSS and JavaScript compiled into the binary,
//! no build step, nothing fetched from elsewhere) polls the JSON endpoints below every two
//! seconds:
//!
//! | endpoint                                          | what                                            |
//! |---------------------------------------------------|-------------------------------------------------|
//! | `GET /ui/api/me`                                  | who is logged in                                 |
//! | `GET /ui/api/topics`                              | topics (of the topic prefix): partitions, records, end offset, rate/s |
//! | `GET /ui/api/groups`                              | the registered instances' consumer groups with lag ([`herald_services::groups`]) |
//! | `GET /ui/api/services`                            | registered instances, heartbeat health and their `/health` |
//! | `GET /ui/api/sagas?state=S&stuck=true`            | saga counts per state and the latest sagas, from the saga tracker found in the registry |
//! | `GET /ui/api/sagas/{id}`                          | one saga's timeline                              |
//! | `GET /ui/api/dlq`                                 | dead-letter topics (`*.dlq`, `*_dlq`) with counts |
//! | `GET /ui/api/dlq/{topic}`                         | its latest dead letters                          |
//! | `GET /ui/api/dlq/{topic}/{partition}/{offset}`    | one dead letter: headers, payload decoded        |
//! | `POST /ui/api/dlq/{topic}/{partition}/{offset}/replay` | publishes it again to its original topic    |
//!
//! Rates are offset deltas between the samples the gateway took over the last
//! [`RATE_WINDOW`]. A replay publishes the original key, value and headers unchanged (a
//! null key or value stays null) with [`herald_bus::dead_letter::DeadLetter::replay_record`],
//! as `herald dlq replay` does, and answers once the broker acknowledged it.
//!
//! # Access
//! Every `/ui` path needs a principal with the `[dashboard] scope` (`admin` by default):
//! `401` without credentials, `403` without the scope. Scripts send `X-API-Key` or
//! `Authorization: Bearer` as on every route. The browser logs in once: the page posts the
//! API key or token to `POST /ui/login`, which answers with a session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Path=/ui`, random 256-bit token, kept in this process's memory for
//! `session_minutes`); the credential itself is never stored by the page, put in a URL,
//! nor logged. `POST`s made with the cookie must carry `X-Herald-UI: 1` (a header a
//! cross-site form cannot send). Sessions belong to one gateway process: a restart, or
//! another instance behind a load balancer, asks to log in again. Without an `[auth]`
//! section the gateway is open and so is the page.
//!
//! Layout: [`access`] (sessions and the scope check), [`broker`] (topics and dead letters
//! read from Kafka), [`api`] (the handlers).

pub mod access;
pub mod api;
pub mod broker;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use herald_bus::codec::SingleObject;
use herald_bus::schema::SchemaSet;
use herald_bus::{KafkaConfig, Publisher};
use herald_services::groups::Inspector;
use herald_services::Directory;
use serde::Deserialize;

use crate::auth::Authenticator;

/// The page, compiled in.
pub const PAGE: &str = include_str!("page.html");

/// Rates are measured over the samples of this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// `[dashboard]` in `gateway.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Serve `/ui` (default true).
    pub enabled: bool,
    /// The scope a principal needs (default `admin`).
    pub scope: String,
    /// The registered service that answers `/sagas` (default `saga-tracker`, as `herald
    /// saga track` registers).
    pub tracker_service: String,
    /// How long a login lasts, in minutes (default 480).
    pub session_minutes: u64,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig { enabled: true, scope: "admin".to_owned(), tracker_service: "saga-tracker".to_owned(), session_minutes: 480 }
    }
}

/// Why the dashboard could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("dashboard: {0}")]
pub struct DashboardError(String);

/// What the dashboard's handlers share.
pub struct Dashboard {
    pub(crate) config: DashboardConfig,
    pub(crate) prefix: String,
    pub(crate) auth: Authenticator,
    pub(crate) sessions: access::Sessions,
    /// Attempts of `POST /ui/login`, across clients (see [`access::LOGINS_PER_MINUTE`]).
    pub(crate) logins: access::LoginLimit,
    pub(crate) kafka: KafkaConfig,
    pub(crate) registry: herald_services::Settings,
    directory: tokio::sync::OnceCell<Arc<Directory>>,
    pub(crate) broker: Arc<std::sync::Mutex<broker::Broker>>,
    pub(crate) inspector: Arc<std::sync::Mutex<Inspector>>,
    pub(crate) publisher: Publisher,
    pub(crate) codec: SingleObject,
    pub(crate) http: reqwest::Client,
    pub(crate) deadline: Duration,
    pub(crate) samples: tokio::sync::Mutex<broker::Samples>,
    pub(crate) groups: api::Snapshot,
    pub(crate) services: api::Cached,
    pub(crate) sagas: api::Cached,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").field("config", &self.config).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// What [`Dashboard::new`] needs from the gateway.
pub struct Parts {
    /// `[dashboard]`.
    pub config: DashboardConfig,
    /// The gateway's topic prefix: the topics shown are those starting with it.
    pub prefix: String,
    /// The gateway's authenticator.
    pub auth: Authenticator,
    /// The Kafka client settings.
    pub kafka: KafkaConfig,
    /// The service registry.
    pub registry: herald_services::Settings,
    /// The registry as the query routes already follow it, if they do.
    pub directory: Option<Arc<Directory>>,
    /// The gateway's publisher (replays go through it).
    pub publisher: Publisher,
    /// The schemas, to decode dead letters' payloads.
    pub schemas: SchemaSet,
    /// The HTTP client (the tracker and the instances' `/health`).
    pub http: reqwest::Client,
    /// How long a broker call may take.
    pub deadline: Duration,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").field("config", &self.config).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Dashboard {
    /// The dashboard's state. Creates its Kafka clients (they connect on first use); the
    /// registry is followed from the first request on, unless `directory` is given.
    pub fn new(parts: Parts) -> Result<Arc<Dashboard>, DashboardError> {
        let timeout = parts.deadline.max(Duration::from_secs(1));
        let broker = broker::Broker::new(&parts.kafka, timeout).map_err(|e| DashboardError(format!("Kafka client: {e}")))?;
        let inspector = Inspector::new(&parts.kafka, timeout).map_err(|e| DashboardError(format!("group inspector: {e}")))?;
        let directory = tokio::sync::OnceCell::new();
        if let Some(d) = parts.directory {
            let _ = directory.set(d);
        }
        let fresh = Duration::from_millis(1500);
        Ok(Arc::new(Dashboard {
            sessions: access::Sessions::new(Duration::from_secs(parts.config.session_minutes.max(1) * 60)),
            logins: access::LoginLimit::new(),
            config: parts.config,
            prefix: parts.prefix,
            auth: parts.auth,
            kafka: parts.kafka,
            registry: parts.registry,
            directory,
            broker: Arc::new(std::sync::Mutex::new(broker)),
            inspector: Arc::new(std::sync::Mutex::new(inspector)),
            publisher: parts.publisher,
            codec: SingleObject::new(parts.schemas),
            http: parts.http,
            deadline: timeout,
            samples: tokio::sync::Mutex::new(broker::Samples::default()),
            groups: api::Snapshot::new(Duration::from_secs(2), Duration::from_secs(30)),
            services: api::Cached::new(fresh),
            sagas: api::Cached::new(fresh),
        }))
    }

    /// The registry, followed from the first call on (waiting up to 10 s for it to be read
    /// to its end the first time).
    pub(crate) async fn directory(&self) -> Result<Arc<Directory>, herald_services::RegistryError> {
        self.directory
            .get_or_try_init(|| async {
                let directory = Directory::start(&self.kafka, &self.registry).await?;
                if !directory.caught_up(Duration::from_secs(10)).await {
                    tracing::warn!(topic = %self.registry.topic, "dashboard: the service registry was not read to its end within 10 s");
                }
                Ok(Arc::new(directory))
            })
            .await
            .cloned()
    }

    /// The `/ui` routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ui", get(api::page))
            .route("/ui/", get(api::page))
            .route("/ui/login", post(access::login))
            .route("/ui/logout", post(access::logout))
            .route("/ui/api/me", get(api::me))
            .route("/ui/api/topics", get(api::topics))
            .route("/ui/api/groups", get(api::groups))
            .route("/ui/api/services", get(api::services))
            .route("/ui/api/sagas", get(api::sagas))
            .route("/ui/api/sagas/{id}", get(api::saga))
            .route("/ui/api/dlq", get(api::dead_letter_topics))
            .route("/ui/api/dlq/{topic}", get(api::dead_letters))
            .route("/ui/api/dlq/{topic}/{partition}/{offset}", get(api::dead_letter))
            .route("/ui/api/dlq/{topic}/{partition}/{offset}/replay", post(api::replay))
            .layer(axum::middleware::from_fn(api::measure))
            .with_state(self.clone())
    }
}
