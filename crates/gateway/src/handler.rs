//! The request pipeline of an event route, in order: authenticate (`401`), authorize
//! (`403`), rate limit (`429`), read the body within the limit (`413`), look up the
//! `Idempotency-Key` (a replay: the stored `202`; another request: `422`; in progress:
//! `409`), validate and fill (`400`), publish and wait for the acknowledgement (`202`, or
//! `503`), record the key.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_bus::publisher::Record;
use herald_bus::trace::{SpanKind, SpanRecord, TraceContext};
use herald_bus::Metadata;
use serde::Serialize;
use uuid::Uuid;

use crate::idempotency::{self, Begin, Claimed, Scoped};
use crate::problem::Problem;
use crate::route::Route;
use crate::server::App;
use crate::validate::{self, Context};

/// The `202` body: where the event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Accepted {
    /// The event id (`ce_id`).
    pub id: Uuid,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

/// Serves one request on `route`, recording its metrics.
///
/// The request runs on a task of its own: when a client hangs up, the server drops this
/// future, and a request dropped between its key's claim and its `202` record would leave
/// the key claimed (`409` until the claim expires) with its event possibly written, so a
/// retry after the claim expired would publish a second one. On its own task the request
/// runs to its end whoever waits for it: its event and `202` record written, or its claim
/// released.
pub(crate) async fn serve(app: Arc<App>, route: Arc<Route>, request: Request) -> Response {
    let started = Instant::now();
    let name = route.name.clone();
    let handled = tokio::spawn(async move {
        let response = match handle(&app, &route, request).await {
            Ok(Outcome::Published(accepted)) => (StatusCode::ACCEPTED, axum::Json(accepted)).into_response(),
            Ok(Outcome::Replayed(accepted)) => (StatusCode::ACCEPTED, [("idempotent-replayed", "true")], axum::Json(accepted)).into_response(),
            Err(problem) => problem.into_response(),
        };
        crate::metrics::request(&route.name, response.status().as_u16(), started.elapsed());
        crate::metrics::breaker(app.sender.breaker_state());
        response
    });
    handled.await.unwrap_or_else(|e| {
        tracing::error!(route = %name, error = %e, "request handler failed");
        crate::metrics::request(&name, 500, started.elapsed());
        Problem::internal("the request's handler failed").into_response()
    })
}

/// A request's outcome: a fresh `202`, or a replayed one.
enum Outcome {
    Published(Accepted),
    Replayed(Accepted),
}

async fn handle(app: &App, route: &Route, request: Request) -> Result<Outcome, Problem> {
    let started = std::time::SystemTime::now();
    let (parts, body) = request.into_parts();
    let principal = app.auth.authenticate(&parts.headers)?;
    if let Some(scope) = principal.missing(&route.scopes) {
        return Err(Problem::forbidden(format!("{} needs scope {scope}", route.name)));
    }
    if let Some(limiter) = &route.limiter {
        limiter.check(&principal.id).map_err(Problem::rate_limited)?;
    }
    let params = route.match_path(parts.uri.path())?;
    if let Some(problem) = unreadable(&parts.headers) {
        return Err(problem);
    }
    // A body that trickles in must not hold the request (and a shutdown) forever.
    let body = tokio::time::timeout(app.sender.deadline(), read_body(body, &parts.headers, app.settings.max_body_bytes))
        .await
        .map_err(|_| Problem::request_timeout(format!("the body did not arrive within {} ms", app.sender.deadline().as_millis())))??;
    // The broker's part of the request (a key's claim, the event) ends by this deadline.
    let until = tokio::time::Instant::now() + app.sender.deadline();
    let now_millis = chrono::Utc::now().timestamp_millis();
    let mut progress = None;
    let mut event_id = None;
    let mut keys = parts.headers.get_all(idempotency::HEADER).iter();
    if let Some(key) = keys.next() {
        // Which one the client meant is anyone's guess: taking the first ignored the other.
        if keys.next().is_some() {
            return Err(Problem::bad_idempotency_key("a request carries one Idempotency-Key, this one several"));
        }
        let scoped = key.to_str().ok().and_then(|k| Scoped::new(&principal.id, k)).ok_or_else(|| {
            Problem::bad_idempotency_key(format!("Idempotency-Key must be 1 to {} visible ASCII characters or spaces", idempotency::MAX_KEY_LEN))
        })?;
        let fingerprint = idempotency::fingerprint(&route.name, parts.uri.path(), &body);
        match app.idempotency.begin(&scoped, &fingerprint, now_millis) {
            Begin::Replay(accepted) => return Ok(Outcome::Replayed(accepted)),
            Begin::Conflict => return Err(Problem::idempotency_conflict()),
            Begin::Busy => return Err(Problem::busy()),
            Begin::Fresh(fresh) => {
                event_id = Some(scoped.event_id(&fingerprint));
                progress = Some(fresh);
            }
        }
    }
    let ctx = Context { principal: &principal.id, now_millis };
    let prepared = validate::prepare(route, &body, &params, ctx)?;
    // A valid request with a fresh key claims it across instances before it publishes.
    let mut claim = None;
    if let Some(fresh) = &progress {
        match app.idempotency.claim(&app.sender, fresh, now_millis, until).await? {
            (Claimed::Won, nonce) => claim = Some(nonce),
            (Claimed::Replay(accepted), _) => return Ok(Outcome::Replayed(accepted)),
            (Claimed::Conflict, _) => return Err(Problem::idempotency_conflict()),
            (Claimed::Busy, _) => return Err(Problem::busy()),
        }
    }
    let mut meta = Metadata::new(route.event_type(), &app.settings.source, &prepared.key);
    if let Some(id) = event_id {
        meta.id = id;
        meta.correlation_id = Some(id.to_string());
    }
    let (trace, parent) = trace(&parts.headers);
    meta.trace = Some(trace);
    // W3C Trace Context: `tracestate` belongs to the trace it came with; a new trace (no
    // valid `traceparent`) does not carry it.
    meta.tracestate = parent.and_then(|_| parts.headers.get("tracestate")).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let sent = async {
        let payload = app.sender.frame(&route.topic, &route.schema, &prepared.datum).await?;
        let record = Record::new(&route.topic, prepared.key.as_bytes(), payload, meta.to_headers());
        app.sender.send_by(record, until).await
    }
    .await;
    // The request's span has the id the event's traceparent carries: the services that
    // react to the event continue it.
    // (Formatted only when an exporter listens, as the consumer runtime and the engine do.)
    if herald_bus::trace::spans_wanted() {
        let name = format!("{} {}", route.method, route.path);
        let id = meta.id.to_string();
        SpanRecord::new(&name, SpanKind::Server, trace, parent, started).topic(&route.topic).event(route.event_type(), &id).actor(&route.name).failed(sent.is_err()).record();
    }
    let (partition, offset) = match sent {
        Ok(sent) => sent,
        Err(problem) => {
            if let (Some(fresh), Some(nonce)) = (&progress, &claim) {
                app.idempotency.release(fresh.hash(), nonce).await;
            }
            return Err(problem);
        }
    };
    let accepted = Accepted { id: meta.id, topic: route.topic.clone(), partition, offset };
    if let Some(progress) = progress {
        app.idempotency.finish(progress, accepted.clone(), now_millis, until).await;
    }
    Ok(Outcome::Published(accepted))
}

/// Why a body cannot be read as JSON, by its headers (`415`): a `Content-Type` that is
/// not JSON, or more than one; a `Content-Encoding` other than `identity` (bodies are
/// never decoded: a gzip body was read as text, and plain JSON declared `br` was
/// accepted as if undeclared).
fn unreadable(headers: &HeaderMap) -> Option<Problem> {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    if let Some(declared) = types.next() {
        if types.next().is_some() {
            return Some(Problem::unsupported_media_type("more than one Content-Type"));
        }
        if !is_json(declared) {
            return Some(Problem::unsupported_media_type(format!("the body must be JSON (application/json), not {:?}", String::from_utf8_lossy(declared.as_bytes()))));
        }
    }
    for encoding in headers.get_all(header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(encoding.as_bytes());
        if text.split(',').map(str::trim).any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity")) {
            return Some(Problem::unsupported_media_type(format!("the body must not be encoded (Content-Encoding: {text}): send it as plain JSON")));
        }
    }
    None
}

/// Whether a `Content-Type` says JSON: `application/json` or a `+json` type, parameters
/// (`; charset=utf-8`) and case aside.
///
fn is_json(content_type: &axum::http::HeaderValue) -> bool {
    let Ok(text) = content_type.to_str() else { return false };
    let essence = text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The request's `traceparent` continued (a child span of it, and the parent's span id),
/// or a new trace when the header is absent or invalid (as W3C trace context says to
/// treat an invalid one).
fn trace(headers: &HeaderMap) -> (TraceContext, Option<u64>) {
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<TraceContext>().ok());
    parent.map_or_else(|| (TraceContext::new_root(), None), |p| (p.child(), Some(p.span_id)))
}

/// The body, refused with `413` past `limit` bytes (by `Content-Length` before reading,
/// and while reading a body without one).
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<axum::body::Bytes, Problem> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Problem::too_large(format!("the body is {} bytes; this gateway takes at most {limit}", declared.unwrap_or_default())));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) || e.to_string().contains("length limit");
        if too_large {
            Problem::too_large(format!("the body is larger than {limit} bytes"))
        } else {
            Problem::malformed(format!("cannot read the body: {e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    #[test]
    fn an_encoded_body_or_two_content_types_are_refused() {
        use axum::http::{header, HeaderMap};
        let headers = |pairs: &[(header::HeaderName, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(name.clone(), HeaderValue::from_static(value));
            }
            map
        };
        let json = (header::CONTENT_TYPE, "application/json");
        assert!(super::unreadable(&headers(std::slice::from_ref(&json))).is_none());
        assert!(super::unreadable(&headers(&[json.clone(), (header::CONTENT_ENCODING, "identity")])).is_none());
        for encoding in ["gzip", "br", "identity, gzip"] {
            let problem = super::unreadable(&headers(&[json.clone(), (header::CONTENT_ENCODING, encoding)])).expect("refused");
            assert_eq!(problem.status, 415, "{encoding}");
            assert!(problem.detail.contains(encoding), "{}", problem.detail);
        }
        let two = super::unreadable(&headers(&[json.clone(), (header::CONTENT_TYPE, "text/plain")])).expect("refused");
        assert_eq!((two.status, two.detail.as_str()), (415, "more than one Content-Type"));
    }

    #[test]
    fn json_content_types() {
        for yes in ["application/json", "Application/JSON; charset=utf-8", "application/cloudevents+json", "application/vnd.api+json ; x=1"] {
            assert!(super::is_json(&HeaderValue::from_static(yes)), "{yes}");
        }
        for no in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "text/json+xml", ""] {
            assert!(!super::is_json(&HeaderValue::from_static(no)), "{no}");
        }
    }
}
