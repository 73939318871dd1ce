//! Query routes: `GET` requests answered by a projector view, found in the service
//! registry (`herald-services`) and balanced across its instances.
//!
//! ```text
//! GET /orders/0193…  →  an instance of `order-status`  →  GET /views/order_status/0193…
//! ```
//!
//! For each request, in order:
//! 1. authenticate and authorize (`401`, `403`) as the event routes do;
//! 2. the candidates: the service's live instances in the registry that serve HTTP and
//!    whose circuit is not open; those whose last active health check failed only when no
//!    other is left. None: `503` (`no-instance`) with `Retry-After`;
//! 3. one is picked by the route's [`Balance`] (consistent
//!    hashing on the key by default; an ejected outlier is skipped while others remain);
//! 4. the request goes to it within what is left of the route's deadline. The answer
//!    passes through as it is, `404` included; a `5xx` or a redirect (never followed)
//!    becomes `502` (`upstream-error`), no answer in time `504` (`upstream-timeout`). An instance that gives no answer at
//!    all (connection refused, or closed or reset before the answer began: a pooled
//!    connection to an instance just killed) is reported failed and the next candidate is
//!    asked, within the same deadline, so a stopped instance costs no error. Query routes
//!    are `GET`s, which are idempotent, so asking again is safe (nginx's
//!    `proxy_next_upstream error` does the same).
//!
//! Every outcome feeds the backend's health: a success ends its failure streak; a failure
//! (5xx, timeout, unreachable) counts toward outlier ejection ([`herald_services::Ejection`])
//! and toward its own circuit breaker ([`crate::breaker`]), which then keeps it out
//! entirely until a probe succeeds. The active checks ([`backends`]) ask every backend's
//! `/health` every `health_interval_ms`.
//!
//! Layout: [`backends`] (per-backend state and the health checker), [`forward`] (the
//! request pipeline).

pub mod backends;
pub mod forward;

use std::sync::Arc;
use std::time::Duration;

use herald_services::{Balancer, Ejection, Strategy};

use crate::config::{Balance, ConfigError, DiscoveryConfig, QueryConfig};
use crate::route::parse_params;

/// A `[[query]]` checked and ready to serve.
#[derive(Debug, Clone)]
pub struct QueryRoute {
    /// Name in metrics and OpenAPI.
    pub name: String,
    /// Path pattern, parameters as `{name}`.
    pub path: String,
    /// Path parameters, in order.
    pub params: Vec<String>,
    /// The registered service asked.
    pub service: String,
    /// The upstream path pattern.
    pub upstream: String,
    /// The parameter hashed for consistent hashing.
    pub key: Option<String>,
    /// How instances are chosen.
    pub balance: Balance,
    /// The balancer (its in-flight counts and ejections are per route).
    pub balancer: Balancer,
    /// The whole request's deadline.
    pub deadline: Duration,
    /// Scopes required.
    pub scopes: Vec<String>,
}

impl QueryRoute {
    /// The upstream path for these decoded path parameters (each percent-encoded again).
    ///
    /// ```
    /// # use herald_gateway::query::QueryRoute;
    /// # let route = herald_gateway::query::compile(&[toml::from_str::<herald_gateway::config::QueryConfig>(
    /// #   "path='/orders/{id}'\nservice='s'\nupstream='/views/o/{id}'").unwrap()], &Default::default(), 1000).unwrap().remove(0);
    /// let params = vec![("id".to_owned(), "a b/c".to_owned())];
    /// assert_eq!(route.upstream_path(&params), "/views/o/a%20b%2Fc");
    /// ```
    pub fn upstream_path(&self, params: &[(String, String)]) -> String {
        let mut path = self.upstream.clone();
        for (name, value) in params {
            path = path.replace(&format!("{{{name}}}"), &encode_segment(value));
        }
        path
    }

    /// The balancing key of a request with these parameters.
    pub fn key_of<'a>(&self, params: &'a [(String, String)]) -> Option<&'a str> {
        let key = self.key.as_deref()?;
        params.iter().find(|(n, _)| n == key).map(|(_, v)| v.as_str())
    }
}

/// Checks every `[[query]]`: a path starting with `/` with whole-segment parameters, an
/// upstream that uses only the route's parameters, a key that is one of them, a valid
/// service name.
pub fn compile(configs: &[QueryConfig], discovery: &DiscoveryConfig, default_deadline_ms: u64) -> Result<Vec<Arc<QueryRoute>>, ConfigError> {
    let ejection = Ejection { consecutive_failures: discovery.eject_failures, cool_down: Duration::from_millis(discovery.eject_ms) };
    let mut routes: Vec<Arc<QueryRoute>> = Vec::with_capacity(configs.len());
    for config in configs {
        let name = config.name.clone().unwrap_or_else(|| format!("GET {}", config.path));
        let invalid = |what: String| ConfigError::Invalid(format!("query {name}: {what}"));
        if !config.path.starts_with('/') || !config.upstream.starts_with('/') {
            return Err(invalid("path and upstream must start with /".to_owned()));
        }
        let params = parse_params(&config.path).map_err(&invalid)?;
        let upstream_params = parse_params(&config.upstream).map_err(&invalid)?;
        if let Some(p) = upstream_params.iter().find(|p| !params.contains(p)) {
            return Err(invalid(format!("upstream parameter {{{p}}} is not a parameter of {}", config.path)));
        }
        let key = match &config.key {
            Some(k) if !params.contains(k) => return Err(invalid(format!("key {k} is not a parameter of {}", config.path))),
            Some(k) => Some(k.clone()),
            None => params.first().cloned(),
        };
        if config.service.is_empty() || config.service.contains('/') {
            return Err(invalid(format!("service {:?} must be non-empty, without /", config.service)));
        }
        if routes.iter().any(|r| r.path == config.path) {
            return Err(invalid(format!("GET {} is defined twice", config.path)));
        }
        let strategy = match config.balance {
            Balance::ConsistentHash => Strategy::ConsistentHash,
            Balance::RoundRobin => Strategy::RoundRobin,
            Balance::LeastOutstanding => Strategy::LeastOutstanding,
        };
        routes.push(Arc::new(QueryRoute {
            name,
            path: config.path.clone(),
            params,
            service: config.service.clone(),
            upstream: config.upstream.clone(),
            key,
            balance: config.balance,
            balancer: Balancer::new(strategy).ejection(ejection),
            deadline: Duration::from_millis(config.deadline_ms.unwrap_or(default_deadline_ms).max(1)),
            scopes: config.scopes.clone(),
        }));
    }
    Ok(routes)
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters stay).
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> Result<Vec<Arc<QueryRoute>>, String> {
        let config = crate::Config::parse(text).map_err(|e| e.to_string())?;
        compile(&config.queries, &config.discovery, 1000).map_err(|e| e.to_string())
    }

    #[test]
    fn a_query_route_compiles_with_its_key_and_deadline() {
        let routes = compile_text("[[query]]\npath='/orders/{order_id}'\nservice='order-status'\nupstream='/views/order_status/{order_id}'\n");
        let route = routes.ok().and_then(|r| r.into_iter().next());
        assert_eq!(route.as_ref().map(|r| (r.key.clone(), r.deadline, r.name.clone())), Some((Some("order_id".to_owned()), Duration::from_millis(1000), "GET /orders/{order_id}".to_owned())));
        let params = vec![("order_id".to_owned(), "o-1".to_owned())];
        assert_eq!(route.as_ref().map(|r| (r.upstream_path(&params), r.key_of(&params).map(str::to_owned))), Some(("/views/order_status/o-1".to_owned(), Some("o-1".to_owned()))));
    }

    #[test]
    fn bad_query_routes_are_refused_naming_the_problem() {
        let cases = [
            ("path='/o/{id}'\nservice='s'\nupstream='/v/{nope}'", "upstream parameter {nope}"),
            ("path='/o/{id}'\nservice='s'\nupstream='/v/{id}'\nkey='x'", "key x"),
            ("path='o'\nservice='s'\nupstream='/v'", "must start with /"),
            ("path='/o/{id'\nservice='s'\nupstream='/v'", "whole segment"),
            ("path='/o'\nservice='a/b'\nupstream='/v'", "service"),
        ];
        for (body, expected) in cases {
            let err = compile_text(&format!("[[query]]\n{body}\n")).err().unwrap_or_default();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
