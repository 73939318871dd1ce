//! `gateway.toml`: the gateway's settings and routes, as written by people.
//!
//! ```toml
//! [gateway]
//! source = "/shop/gateway"     # ce_source of the events (default "/herald/gateway")
//! schemas = "../../schemas"    # the schemas/ folder, relative to this file (default "schemas")
//! topic_prefix = ""            # prepended to every route's topic (--topic-prefix overrides)
//! max_body_bytes = 65536       # larger bodies get 413
//! deadline_ms = 5000           # no request waits longer for the broker; then 503
//!
//! [breaker]                    # see the breaker module
//! failures = 3                 # consecutive failed sends that open it
//! open_ms = 2000               # refuse at once for this long, then probe
//!
//! [idempotency]                # see the idempotency module
//! topic = "herald.gateway.idempotency"   # compacted; the topic prefix applies
//! ttl_hours = 24
//!
//! # [auth]: API keys and JWT, see the auth::config module. Without it: no authentication.
//!
//! [[route]]
//! name = "place-order"         # metrics label and OpenAPI operationId (default: METHOD path)
//! method = "POST"
//! path = "/orders"             # path parameters as {name}: "/orders/{order_id}/notes"
//! event = "shop.orders.OrderPlaced"   # Avro full name of a schema under `schemas`
//! topic = "shop.orders"
//! key = { body = "order_id" }  # or { path = "order_id" }: the Kafka key and ce_subject
//! scopes = ["orders:write"]    # the principal needs all of them (403 otherwise)
//! rate = { per_second = 50, burst = 100 }   # per principal; 429 beyond (default none)
//! [route.fill]                 # server-side fields
//! order_id = "uuid7"           # a UUIDv7 when the body has none (or null)
//! placed_at = "now"            # always the server's time, epoch milliseconds
//! # customer_id = "principal"  # always the authenticated principal's id
//!
//! [[query]]                    # a GET served by a projector view found in the registry
//! name = "order-status"        # metrics label and OpenAPI operationId (default: GET path)
//! path = "/orders/{order_id}"
//! service = "order-status"     # the registered service to ask
//! upstream = "/views/order_status/{order_id}"   # the path asked, with the parameters
//! key = "order_id"             # consistent-hash key (default: the first path parameter)
//! balance = "consistent-hash"  # or "round-robin", "least-outstanding"
//! deadline_ms = 2000           # default [gateway] deadline_ms; then 504
//! scopes = ["orders:read"]
//!
//! [discovery]                  # see the query module
//! health_interval_ms = 2000    # GET /health of every backend this often (0: never)
//! eject_failures = 3           # failures in a row that eject a backend for eject_ms
//! breaker_failures = 5         # failures in a row that open a backend's circuit
//!
//! [dashboard]                  # the web page at /ui, see the dashboard module
//! enabled = true               # default true
//! scope = "admin"              # the scope a principal needs to see it (default "admin")
//! tracker_service = "saga-tracker"   # the registered service asked for the sagas
//! session_minutes = 480        # how long a login lasts (default 8 hours)
//! ```
//!
//! Loading checks everything it can before the gateway starts: every event type is a
//! record schema under `schemas`, key and fill fields are fields of it, path parameters
//! are well formed (see [`crate::route::compile`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[gateway]`: process-wide settings.
    #[serde(default)]
    pub gateway: Settings,
    /// `[breaker]`: when the gateway stops sending to an unavailable broker.
    #[serde(default)]
    pub breaker: crate::breaker::BreakerConfig,
    /// `[auth]`: API keys and JWT (see [`crate::auth::config`]); without it, no
    /// authentication.
    #[serde(default)]
    pub auth: crate::auth::config::AuthConfig,
    /// `[[route]]`: one entry per HTTP route.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[idempotency]`: where `Idempotency-Key` records are kept.
    #[serde(default)]
    pub idempotency: crate::idempotency::IdempotencyConfig,
    /// `[[query]]`: `GET` routes answered by a registered service (a projector view).
    #[serde(default, rename = "query")]
    pub queries: Vec<QueryConfig>,
    /// `[discovery]`: health checks, ejection and breakers of the query routes' backends.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// `[dashboard]`: the web page at `/ui` (see [`crate::dashboard`]).
    #[serde(default)]
    pub dashboard: crate::dashboard::DashboardConfig,
    /// The folder relative paths of the file are relative to (the file's folder; the
    /// current folder for [`Config::parse`]).
    #[serde(skip)]
    pub base: PathBuf,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// CloudEvents `source` of every event (default `/herald/gateway`).
    pub source: String,
    /// The schemas folder; a relative path is relative to the config file.
    pub schemas: PathBuf,
    /// Prefix of every route's topic (default none).
    pub topic_prefix: String,
    /// Largest accepted request body in bytes (default 64 KiB); larger ones get `413`.
    pub max_body_bytes: usize,
    /// How long a request may wait for the broker's acknowledgement, in milliseconds
    /// (default 5000); then `503`.
    pub deadline_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            source: "/herald/gateway".to_owned(),
            schemas: PathBuf::from("schemas"),
            topic_prefix: String::new(),
            max_body_bytes: 64 * 1024,
            deadline_ms: 5000,
        }
    }
}

/// `[[route]]`: one HTTP route that publishes one event type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name in metrics and OpenAPI (default `METHOD path`).
    #[serde(default)]
    pub name: Option<String>,
    /// HTTP method (`POST`, `PUT`, `PATCH`, ...).
    pub method: String,
    /// Path, with parameters as `{name}`.
    pub path: String,
    /// Event type: the Avro full name of a record schema.
    pub event: String,
    /// Topic, before the prefix.
    pub topic: String,
    /// Where the Kafka key comes from.
    pub key: KeySource,
    /// Scopes the principal must all have.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Server-side fields: field name to how it is filled.
    #[serde(default)]
    pub fill: BTreeMap<String, Fill>,
    /// Rate limit per principal on this route (none by default).
    #[serde(default)]
    pub rate: Option<crate::limits::RateConfig>,
}

/// `[[query]]`: a `GET` route answered by an instance of a registered service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Name in metrics and OpenAPI (default `GET path`).
    #[serde(default)]
    pub name: Option<String>,
    /// Path, with parameters as `{name}`.
    pub path: String,
    /// The service in the registry whose instances answer.
    pub service: String,
    /// The path asked of the instance, with the route's parameters as `{name}`; the
    /// request's query string is passed on.
    pub upstream: String,
    /// The path parameter hashed for consistent hashing (default: the first one).
    #[serde(default)]
    pub key: Option<String>,
    /// How an instance is chosen (default consistent hashing on the key).
    #[serde(default)]
    pub balance: Balance,
    /// How long the whole request may take, in milliseconds (default `[gateway]
    /// deadline_ms`); then `504`.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Scopes the principal must all have.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// How a query route chooses among a service's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The instance owning the key on a hash ring: one key's queries hit one instance
    /// while it lives (its caches stay warm, its reads are monotonic).
    #[default]
    ConsistentHash,
    /// Each instance in turn.
    RoundRobin,
    /// The instance with the fewest requests in flight.
    LeastOutstanding,
}

/// `[discovery]`: how the query routes' backends are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// How often each backend's `/health` is asked, in milliseconds (default 2000; 0:
    /// never). A backend whose last check failed gets requests only when no other can.
    pub health_interval_ms: u64,
    /// How long a health check may take, in milliseconds (default 1000).
    pub health_timeout_ms: u64,
    /// Failed requests in a row that eject a backend (default 3; 0: never).
    pub eject_failures: u32,
    /// How long an ejected backend is skipped, in milliseconds (default 10000), unless
    /// every backend is ejected.
    pub eject_ms: u64,
    /// Failed requests in a row that open a backend's circuit (default 5): it gets no
    /// requests for `breaker_open_ms`, then one probe.
    pub breaker_failures: u32,
    /// How long a backend's circuit stays open, in milliseconds (default 5000).
    pub breaker_open_ms: u64,
    /// `Retry-After` when no instance can answer, in milliseconds (default 1000).
    pub retry_after_ms: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            health_interval_ms: 2000,
            health_timeout_ms: 1000,
            eject_failures: 3,
            eject_ms: 10_000,
            breaker_failures: 5,
            breaker_open_ms: 5000,
            retry_after_ms: 1000,
        }
    }
}

/// Where a route's Kafka key (and `ce_subject`) comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum KeySource {
    /// A top-level field of the body (after the fills), a string or an integer.
    Body(String),
    /// A path parameter.
    Path(String),
}

/// How a server-side field is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// A new UUIDv7 string when the body has no value (or `null`) for the field.
    Uuid7,
    /// The server's current time in epoch milliseconds, always (a client value is replaced).
    Now,
    /// The authenticated principal's id, always (a client value is replaced).
    Principal,
}

/// The file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of this format.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// The schemas folder could not be loaded.
    #[error("schemas {path}: {reason}")]
    Schemas {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A route, key or setting does not make sense.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and parses `path`; a relative `schemas` becomes relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { reason, .. } => ConfigError::Parse { path: path.to_owned(), reason },
            other => other,
        })?;
        if config.gateway.schemas.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            config.gateway.schemas = base.join(&config.gateway.schemas);
        }
        config.base = path.parent().unwrap_or(Path::new(".")).to_owned();
        Ok(config)
    }

    /// Parses a configuration from TOML text (paths stay as written).
    ///
    /// ```
    /// let config = herald_gateway::Config::parse(r#"
    ///     [[route]]
    ///     method = "POST"
    ///     path = "/orders"
    ///     event = "shop.orders.OrderPlaced"
    ///     topic = "shop.orders"
    ///     key = { body = "order_id" }
    ///     fill = { order_id = "uuid7" }
    /// "#)?;
    /// assert_eq!(config.routes[0].key, herald_gateway::config::KeySource::Body("order_id".into()));
    /// # Ok::<(), herald_gateway::config::ConfigError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::from("gateway.toml"), reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse("[gateway]\nlisten_on = 1\n").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("listen_on"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let config = Config::parse("").ok().map(|c| c.gateway);
        assert_eq!(config.map(|g| (g.max_body_bytes, g.deadline_ms)), Some((65536, 5000)));
    }

    #[test]
    fn query_routes_parse_with_defaults() {
        let config = Config::parse("[[query]]\npath='/o/{id}'\nservice='s'\nupstream='/v/{id}'\n[[query]]\npath='/p'\nservice='s'\nupstream='/p'\nbalance='round-robin'\n");
        let balances: Vec<Balance> = config.map(|c| c.queries.iter().map(|q| q.balance).collect()).unwrap_or_default();
        assert_eq!(balances, [Balance::ConsistentHash, Balance::RoundRobin]);
        assert!(Config::parse("[[query]]\npath='/p'\nservice='s'\nupstream='/p'\nbalance='random'\n").is_err());
    }

    #[test]
    fn fill_modes_parse() {
        let config = Config::parse(
            "[[route]]\nmethod='POST'\npath='/a/{id}'\nevent='x.A'\ntopic='t'\nkey={path='id'}\nfill={a='uuid7',b='now',c='principal'}\n",
        );
        let route = config.ok().and_then(|c| c.routes.into_iter().next());
        let fills: Vec<Fill> = route.map(|r| r.fill.into_values().collect()).unwrap_or_default();
        assert_eq!(fills, vec![Fill::Uuid7, Fill::Now, Fill::Principal]);
    }
}
