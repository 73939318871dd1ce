//! The request pipeline of a query route (see the [module docs](super)).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_services::Instance;
use tokio::time::Instant;

use super::backends::{admissible, Backends, Checked};
use super::QueryRoute;
use crate::problem::Problem;
use crate::server::App;

/// Largest upstream answer passed through (a view's page of rows); larger is a `502`.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Serves one request on a query route, recording its metrics.
pub(crate) async fn serve(app: Arc<App>, route: Arc<QueryRoute>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let response = match handle(&app, &route, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    crate::metrics::request(&route.name, response.status().as_u16(), started.elapsed());
    response
}

/// How one attempt at one instance ended.
enum Attempt {
    /// An answer below 500: passed through.
    Answered(Response),
    /// The instance could not be reached: it never saw the request; try another.
    Unreachable(String),
    /// The connection closed or reset before any answer came (a pooled connection to an
    /// instance that just died, an instance that crashed on the request): a `GET` is
    /// idempotent, so another is asked, as nginx's `proxy_next_upstream error` does.
    HungUp(String),
    /// The instance failed (5xx, broken answer): `502`.
    Failed(String),
    /// No answer before the deadline: `504`.
    TimedOut,
}

async fn handle(app: &App, route: &QueryRoute, request: Request) -> Result<Response, Problem> {
    let deadline = Instant::now() + route.deadline;
    let (parts, _body) = request.into_parts();
    let principal = app.auth.authenticate(&parts.headers)?;
    if let Some(scope) = principal.missing(&route.scopes) {
        return Err(Problem::forbidden(format!("{} needs scope {scope}", route.name)));
    }
    let Some(backends) = app.backends.as_ref() else {
        return Err(Problem::internal("query routes without a service directory"));
    };
    let params = crate::route::match_path(&route.path, parts.uri.path())?;
    // URL parsers (reqwest's among them) resolve a segment `.` or `..`, also written
    // `%2E%2E`, against the path: the upstream request would leave the route's path.
    if let Some((name, value)) = params.iter().find(|(_, v)| v == "." || v == "..") {
        return Err(Problem::invalid_parameter(format!("path parameter {name} may not be {value:?}")));
    }
    let mut path = route.upstream_path(&params);
    if let Some(query) = parts.uri.query() {
        path = format!("{path}?{query}");
    }
    let key = route.key_of(&params).map(str::as_bytes);
    let retry_after = Duration::from_millis(backends.config().retry_after_ms.max(1));
    let mut tried: HashSet<String> = HashSet::new();
    let mut unreachable = Vec::new();
    loop {
        let live = backends.live(&route.service);
        if live.is_empty() {
            return Err(Problem::no_instance(format!("no live instance of {} is registered", route.service), retry_after));
        }
        let Some(candidates) = choose(backends, &live, &tried) else {
            let detail = if unreachable.is_empty() {
                format!("every instance of {} is failing (circuit open)", route.service)
            } else {
                format!("no instance of {} could be reached ({})", route.service, unreachable.join("; "))
            };
            return Err(Problem::no_instance(detail, retry_after));
        };
        let Some(lease) = route.balancer.pick(&candidates, key) else {
            return Err(Problem::no_instance(format!("no live instance of {}", route.service), retry_after));
        };
        let target = lease.instance().clone();
        tried.insert(target.key());
        let backend = backends.backend(&target.key());
        let Ok(permit) = backend.breaker.admit() else {
            // Its circuit opened or a probe is out since `choose` looked: the next one.
            drop(lease);
            continue;
        };
        let attempt = ask(backends, &target, &path, &parts.headers, deadline).await;
        let outcome = match &attempt {
            Attempt::Answered(_) => "ok",
            Attempt::Unreachable(_) => "unreachable",
            Attempt::HungUp(_) => "hung-up",
            Attempt::Failed(_) => "error",
            Attempt::TimedOut => "timeout",
        };
        crate::metrics::upstream(&route.name, &route.service, &target.instance, outcome);
        match attempt {
            Attempt::Answered(response) => {
                backend.breaker.success(permit);
                lease.succeeded();
                return Ok(response);
            }
            Attempt::Unreachable(why) | Attempt::HungUp(why) => {
                backend.breaker.failure(permit);
                lease.failed();
                tracing::warn!(route = %route.name, backend = %target.key(), error = %why, "backend gave no answer; asking another");
                unreachable.push(format!("{}: {why}", target.instance));
                if Instant::now() >= deadline {
                    return Err(Problem::upstream_timeout(format!("no instance of {} answered within {} ms", route.service, route.deadline.as_millis())));
                }
            }
            Attempt::Failed(why) => {
                backend.breaker.failure(permit);
                lease.failed();
                return Err(Problem::upstream_error(format!("instance {} of {} failed: {why}", target.instance, route.service)));
            }
            Attempt::TimedOut => {
                backend.breaker.failure(permit);
                lease.failed();
                return Err(Problem::upstream_timeout(format!("instance {} of {} did not answer within {} ms", target.instance, route.service, route.deadline.as_millis())));
            }
        }
    }
}

/// The candidates among `live` not yet tried: those whose circuit is not open, preferring
/// those whose health check does not fail. `None` when there are none.
fn choose(backends: &Backends, live: &[Instance], tried: &HashSet<String>) -> Option<Vec<Instance>> {
    let open: Vec<(Instance, Checked)> = live
        .iter()
        .filter(|i| !tried.contains(&i.key()))
        .filter_map(|i| {
            let b = backends.backend(&i.key());
            admissible(b.breaker.state()).then(|| (i.clone(), b.checked()))
        })
        .collect();
    if open.is_empty() {
        return None;
    }
    let healthy: Vec<Instance> = open.iter().filter(|(_, c)| *c != Checked::Failing).map(|(i, _)| i.clone()).collect();
    Some(if healthy.is_empty() { open.into_iter().map(|(i, _)| i).collect() } else { healthy })
}

/// Asks `instance` for `path` within the deadline.
async fn ask(backends: &Backends, instance: &Instance, path: &str, headers: &axum::http::HeaderMap, deadline: Instant) -> Attempt {
    let url = format!("{}{path}", instance.address);
    let mut request = backends.http().get(&url);
    for name in [header::ACCEPT, header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::HeaderName::from_static("traceparent"), header::HeaderName::from_static("tracestate")] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value.clone());
        }
    }
    let exchange = async {
        let response = request.send().await.map_err(|e| match e {
            e if e.is_timeout() => Attempt::TimedOut,
            e if e.is_connect() => Attempt::Unreachable(e.to_string()),
            e if hung_up(&e) => Attempt::HungUp(e.to_string()),
            e => Attempt::Failed(e.to_string()),
        })?;
        let status = response.status();
        let passed = end_to_end(response.headers());
        // Once the answer has begun, its instance saw the request: a broken body is a 502.
        let body = read_limited(response).await.map_err(|e| Attempt::Failed(e.to_string()))?;
        Ok::<_, Attempt>((status, passed, body))
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => Attempt::TimedOut,
        Ok(Err(attempt)) => attempt,
        Ok(Ok((status, _, None))) => Attempt::Failed(format!("answer of status {status} larger than {MAX_ANSWER_BYTES} bytes")),
        Ok(Ok((status, _, _))) if status.is_server_error() => Attempt::Failed(format!("answered {status}")),
        // Not followed (the client has no redirect policy): a view that redirects is
        // misconfigured, and its target is not the gateway's to choose. (304 is not a
        // redirect: the answer to a conditional request, passed through.)
        Ok(Ok((status, _, _))) if status.is_redirection() && status != reqwest::StatusCode::NOT_MODIFIED => Attempt::Failed(format!("answered {status}; redirects are not followed")),
        Ok(Ok((status, passed, Some(body)))) => {
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, Body::from(body)).into_response();
            response.headers_mut().extend(passed);
            Attempt::Answered(response)
        }
    }
}

/// The answer's end-to-end headers, for the client: all but the hop-by-hop ones (RFC 9110
/// §7.6.1: `Connection`, those it names, `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Trailer`, `Transfer-Encoding`, `Upgrade`) and `Content-Length`, which the gateway
/// sets for the body it sends. So `ETag`, `Cache-Control`, `Last-Modified`, `Retry-After`
/// of a `429` and the view's own headers reach the client.
fn end_to_end(headers: &reqwest::header::HeaderMap) -> axum::http::HeaderMap {
    let named: Vec<String> = headers.get_all(reqwest::header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(|n| n.trim().to_ascii_lowercase()).collect();
    let hop = |name: &str| matches!(name, "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "content-length") || named.iter().any(|n| n == name);
    let mut passed = axum::http::HeaderMap::new();
    for (name, value) in headers {
        if hop(name.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (header::HeaderName::from_bytes(name.as_str().as_bytes()), HeaderValue::from_bytes(value.as_bytes())) {
            passed.append(name, value);
        }
    }
    passed
}

/// Whether `error` is the connection closing or resetting before an answer began: not a
/// malformed answer, which its instance did send.
fn hung_up(error: &reqwest::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        if cause.downcast_ref::<std::io::Error>().is_some_and(|io| matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)) {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The answer's body, or `None` when it is larger than [`MAX_ANSWER_BYTES`].
async fn read_limited(mut response: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
