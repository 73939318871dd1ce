//! The dashboard's handlers: the page and its JSON endpoints (listed in [`super`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_bus::codec::decode_value;
use herald_bus::dead_letter::DeadLetter;
use serde_json::{json, Value};

use super::broker::{is_dead_letter_topic, TopicRate};
use super::Dashboard;
use crate::problem::{Params, Problem};

type Answer = Result<Json<Value>, Problem>;

/// A JSON answer kept for a moment, so that several open pages cost the broker one
/// computation per refresh. Concurrent requests wait for the one computing.
#[derive(Debug)]
pub struct Cached {
    fresh: Duration,
    value: tokio::sync::Mutex<Option<(Instant, String, Value)>>,
}

impl Cached {
    /// Answers younger than `fresh` are reused.
    pub fn new(fresh: Duration) -> Self {
        Cached { fresh, value: tokio::sync::Mutex::new(None) }
    }

    /// The answer for `key` (the request's parameters), computed by `compute` unless a
    /// fresh one is kept.
    pub async fn get<F: Future<Output = Result<Value, Problem>>>(&self, key: &str, compute: impl FnOnce() -> F) -> Result<Value, Problem> {
        let mut kept = self.value.lock().await;
        if let Some((at, k, value)) = kept.as_ref()
            && k == key
            && at.elapsed() < self.fresh
        {
            return Ok(value.clone());
        }
        let value = compute().await?;
        *kept = Some((Instant::now(), key.to_owned(), value.clone()));
        Ok(value)
    }
}

/// Records every `/ui` request in the gateway's request metrics, as route `dashboard`.
pub async fn measure(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::request("dashboard", response.status().as_u16(), started.elapsed());
    response
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Problem {
    Problem::unavailable(format!("{what}: {e}"), Duration::from_secs(2))
}

async fn blocking<T: Send + 'static>(what: &'static str, f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(unavailable(what, e)),
        Err(e) => Err(Problem::internal(format!("{what}: {e}"))),
    }
}

/// `GET /ui`: the page. Without access it is served with `401` or `403` (the page then
/// shows its login form or says what is missing); no data is in the page itself.
pub async fn page(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap) -> Response {
    let status = match dashboard.admit(&method, &headers) {
        Ok(_) => StatusCode::OK,
        Err(problem) => problem.status_code(),
    };
    let mut response = (status, PAGE_HTML).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Everything the page uses is in it: nothing from elsewhere, no framing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

const PAGE_HTML: &str = super::PAGE;

macro_rules! admit {
    ($dashboard:expr, $method:expr, $headers:expr) => {
        match $dashboard.admit(&$method, &$headers) {
            Ok(principal) => principal,
            Err(problem) => return Err(problem),
        }
    };
}

/// `GET /ui/api/me`: the principal, the scope, the topic prefix.
pub async fn me(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap) -> Answer {
    let principal = admit!(dashboard, method, headers);
    let session = super::access::session_token(&headers).is_some_and(|t| dashboard.sessions.find(t).is_some());
    Ok(Json(json!({ "principal": principal.id, "scope": dashboard.config.scope, "topic_prefix": dashboard.prefix, "session": session, "auth": dashboard.auth.is_enabled() })))
}

/// The topics with their rates (one sample per call, at most one call at a time).
async fn sample_topics(dashboard: &Arc<Dashboard>) -> Result<(Vec<TopicRate>, bool), Problem> {
    let mut samples = dashboard.samples.lock().await;
    let (broker, prefix) = (dashboard.broker.clone(), dashboard.prefix.clone());
    let (topics, truncated) = blocking("reading the topics", move || {
        let broker = broker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        broker.topics(&prefix).map_err(|e| e.to_string())
    })
    .await?;
    Ok((samples.add(Instant::now(), topics), truncated))
}

/// `GET /ui/api/topics`: `{"topics": [{topic, partitions, records, end, rate}], "truncated"}`.
pub async fn topics(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap) -> Answer {
    admit!(dashboard, method, headers);
    let (topics, truncated) = sample_topics(&dashboard).await?;
    Ok(Json(json!({ "topics": topics, "truncated": truncated })))
}

/// `GET /ui/api/dlq`: the dead-letter topics with their counts.
pub async fn dead_letter_topics(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap) -> Answer {
    admit!(dashboard, method, headers);
    let (topics, _) = sample_topics(&dashboard).await?;
    let dlq: Vec<Value> = topics
        .iter()
        .filter(|t| is_dead_letter_topic(&t.offsets.topic))
        .map(|t| json!({ "topic": t.offsets.topic, "count": t.offsets.records, "rate": t.rate }))
        .collect();
    Ok(Json(json!({ "topics": dlq })))
}

/// `GET /ui/api/groups`: the consumer groups the registered instances declare, with lag,
/// as of the last inspection (`as_of_s` ago). Inspecting reads the offsets topic's
/// partitions that hold the groups' commits, which can take long on a busy cluster: it
/// runs in the background (again when a request finds the last one older than 2 s), and
/// only the first request waits for it (at most 30 s, then `503`).
pub async fn groups(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap) -> Answer {
    admit!(dashboard, method, headers);
    dashboard.groups.get(&dashboard, |d| Box::pin(inspect_groups(d))).await.map(Json)
}

async fn inspect_groups(dashboard: Arc<Dashboard>) -> Result<Value, Problem> {
    let directory = dashboard.directory().await.map_err(|e| unavailable("the service registry", e))?;
    let mut by_group: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in directory.entries() {
        for group in &entry.instance.consumer_groups {
            by_group.entry(group.clone()).or_default().insert(entry.instance.service.clone());
        }
    }
    let groups: BTreeSet<String> = by_group.keys().cloned().collect();
    let inspector = dashboard.inspector.clone();
    let lags = blocking("inspecting the consumer groups", move || {
        let inspector = inspector.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inspector.inspect(&groups).map_err(|e| e.to_string())
    })
    .await?;
    let out: Vec<Value> = lags
        .into_iter()
        .map(|lag| {
            let services = by_group.get(&lag.group).cloned().unwrap_or_default();
            let mut value = serde_json::to_value(&lag).unwrap_or_default();
            value["services"] = json!(services);
            value
        })
        .collect();
    Ok(json!({ "groups": out }))
}

type Computation = std::pin::Pin<Box<dyn Future<Output = Result<Value, Problem>> + Send>>;

/// An answer computed in the background and served as it last was, with its age in
/// `as_of_s`: for what is slow to compute. A request that finds it older than `every`
/// starts the next computation (one at a time); only a request finding none waits.
#[derive(Debug)]
pub struct Snapshot {
    every: Duration,
    first_wait: Duration,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    last: std::sync::Mutex<Option<(Instant, Result<Value, Problem>)>>,
    running: std::sync::atomic::AtomicBool,
    done: tokio::sync::Notify,
}

impl Shared {
    fn current(&self) -> Option<(Instant, Result<Value, Problem>)> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Snapshot {
    /// Recomputed when older than `every`; the first request waits up to `first_wait`.
    pub fn new(every: Duration, first_wait: Duration) -> Self {
        Snapshot { every, first_wait, shared: Arc::default() }
    }

    /// The last answer (starting the next computation if it is old), or the first one.
    pub async fn get(&self, dashboard: &Arc<Dashboard>, compute: fn(Arc<Dashboard>) -> Computation) -> Result<Value, Problem> {
        let notified = self.shared.done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let current = self.shared.current();
        let stale = current.as_ref().is_none_or(|(at, _)| at.elapsed() >= self.every);
        if stale && !self.shared.running.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let (shared, computation) = (self.shared.clone(), compute(dashboard.clone()));
            tokio::spawn(async move {
                let result = computation.await;
                *shared.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), result));
                shared.running.store(false, std::sync::atomic::Ordering::Release);
                shared.done.notify_waiters();
            });
        }
        let (at, result) = match current {
            Some(found) => found,
            None => {
                if tokio::time::timeout(self.first_wait, notified).await.is_err() {
                    return Err(Problem::unavailable("still inspecting the consumer groups", Duration::from_secs(2)));
                }
                self.shared.current().ok_or_else(|| Problem::internal("no consumer group inspection"))?
            }
        };
        let mut value = result?;
        value["as_of_s"] = json!(at.elapsed().as_secs_f64());
        Ok(value)
    }
}

/// `GET /ui/api/services`: every registered instance, its heartbeat health, and what its
/// `/health` answered just now (`healthy`, `unhealthy`, `unreachable`, or `none` for an
/// instance without HTTP or expired).
pub async fn services(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap) -> Answer {
    admit!(dashboard, method, headers);
    let value = dashboard
        .services
        .get("", || async {
            let directory = dashboard.directory().await.map_err(|e| unavailable("the service registry", e))?;
            let now = chrono::Utc::now().timestamp_millis();
            let mut checks = tokio::task::JoinSet::new();
            for entry in directory.entries() {
                let http = dashboard.http.clone();
                checks.spawn(async move {
                    let live = entry.health == herald_services::Health::Live;
                    let check = if !live || entry.instance.address.is_empty() {
                        "none"
                    } else {
                        match http.get(format!("{}/health", entry.instance.address)).timeout(Duration::from_secs(1)).send().await {
                            Ok(r) if r.status().is_success() => "healthy",
                            Ok(_) => "unhealthy",
                            Err(_) => "unreachable",
                        }
                    };
                    let i = &entry.instance;
                    let value = json!({
                        "service": i.service, "instance": i.instance, "address": i.address, "version": i.version,
                        "started_at_ms": i.started_at_ms, "uptime_s": (now - i.started_at_ms).max(0) / 1000,
                        "heartbeat_age_s": entry.age.as_secs_f64(), "registry": entry.health, "health": check,
                        "consumer_groups": i.consumer_groups,
                    });
                    (i.key(), value)
                });
            }
            let mut out: Vec<(String, Value)> = Vec::new();
            while let Some(done) = checks.join_next().await {
                if let Ok(pair) = done {
                    out.push(pair);
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(json!({ "services": out.into_iter().map(|(_, v)| v).collect::<Vec<_>>() }))
        })
        .await?;
    Ok(Json(value))
}

/// The live instances of the tracker with an address, in the registry's order.
async fn trackers(dashboard: &Dashboard) -> Result<Vec<String>, Problem> {
    let directory = dashboard.directory().await.map_err(|e| unavailable("the service registry", e))?;
    let addresses: Vec<String> = directory.live(&dashboard.config.tracker_service).into_iter().filter(|i| !i.address.is_empty()).map(|i| i.address).collect();
    if addresses.is_empty() {
        return Err(Problem::no_instance(format!("no live instance of {} in the service registry {}", dashboard.config.tracker_service, dashboard.registry.topic), Duration::from_secs(2)));
    }
    Ok(addresses)
}

/// `path` asked of the tracker: of each live instance in turn until one answers (one
/// killed stays live in the registry until its TTL, and a pooled connection to it fails),
/// all within the dashboard's deadline.
async fn ask_tracker(dashboard: &Dashboard, path: &str) -> Result<(StatusCode, Value), Problem> {
    let deadline = tokio::time::Instant::now() + dashboard.deadline;
    let mut failures = Vec::new();
    for base in trackers(dashboard).await? {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let response = match dashboard.http.get(format!("{base}{path}")).timeout(left).send().await {
            Ok(response) => response,
            Err(e) => {
                failures.push(format!("the saga tracker at {base}: {e}"));
                continue;
            }
        };
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let text = response.text().await.map_err(|e| Problem::upstream_error(format!("the saga tracker at {base}: {e}")))?;
        return Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))));
    }
    Err(Problem::upstream_error(if failures.is_empty() { "no time left to ask the saga tracker".to_owned() } else { failures.join("; ") }))
}

/// Sagas asked of the tracker per refresh (the counts are over these).
const SAGAS_READ: usize = 5000;
/// Sagas listed.
const SAGAS_SHOWN: usize = 100;

/// Parameters of `GET /ui/api/sagas`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SagaFilter {
    /// Only sagas in this state (`running`, `completed`, `compensated`, `failed`, `stuck`).
    pub state: Option<String>,
    /// Only stuck sagas.
    pub stuck: Option<bool>,
}

/// `GET /ui/api/sagas`: `{"tracker", "counts": {state: n, "stuck": n}, "total",
/// "truncated", "sagas": [the latest 100 matching]}`.
pub async fn sagas(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap, Query(filter): Query<SagaFilter>) -> Answer {
    admit!(dashboard, method, headers);
    let all = dashboard
        .sagas
        .get("", || async {
            let (status, list) = ask_tracker(&dashboard, &format!("/sagas?limit={SAGAS_READ}")).await?;
            if !status.is_success() {
                return Err(Problem::upstream_error(format!("the saga tracker answered {status}: {list}")));
            }
            Ok(list)
        })
        .await?;
    let list = all.as_array().cloned().unwrap_or_default();
    let mut counts: BTreeMap<String, usize> = ["running", "completed", "compensated", "failed", "stuck"].into_iter().map(|s| (s.to_owned(), 0)).collect();
    let mut stuck = 0;
    for saga in &list {
        *counts.entry(saga["state"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        if saga["stuck"].as_bool() == Some(true) {
            stuck += 1;
        }
    }
    let shown: Vec<&Value> = list
        .iter()
        .filter(|s| filter.state.as_deref().is_none_or(|state| s["state"].as_str() == Some(state)))
        .filter(|s| !filter.stuck.unwrap_or(false) || s["stuck"].as_bool() == Some(true))
        .take(SAGAS_SHOWN)
        .collect();
    Ok(Json(json!({
        "counts": counts, "stuck": stuck, "total": list.len(), "truncated": list.len() >= SAGAS_READ, "sagas": shown,
    })))
}

/// `GET /ui/api/sagas/{id}`: the tracker's answer for one saga (its timeline).
pub async fn saga(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap, Params(id): Params<String>) -> Result<Response, Problem> {
    admit!(dashboard, method, headers);
    let (status, value) = ask_tracker(&dashboard, &format!("/sagas/{}", encode(&id))).await?;
    match status {
        s if s.is_success() => Ok(Json(value).into_response()),
        StatusCode::NOT_FOUND => Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "No such saga", format!("the tracker knows no saga {id}"))),
        s => Err(Problem::upstream_error(format!("the saga tracker answered {s}: {value}"))),
    }
}

/// A dead-letter topic of the dashboard's prefix, or `404`.
fn dead_letter_topic(dashboard: &Dashboard, topic: &str) -> Result<(), Problem> {
    if is_dead_letter_topic(topic) && topic.starts_with(&dashboard.prefix) {
        Ok(())
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "No such dead-letter topic", format!("{topic} is not a dead-letter topic (*.dlq, *_dlq) of the prefix {:?}", dashboard.prefix)))
    }
}

fn summary(dl: &DeadLetter) -> Value {
    json!({
        "dlq_partition": dl.dlq_partition, "dlq_offset": dl.dlq_offset,
        "topic": dl.topic, "partition": dl.partition, "offset": dl.offset,
        "stage": dl.stage, "attempts": dl.attempts, "group": dl.group, "time": dl.time, "reason": dl.reason,
        "key": dl.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "payload_bytes": dl.payload.as_ref().map(Vec::len),
    })
}

/// Dead letters listed per partition.
const LETTERS_PER_PARTITION: i64 = 100;

/// `GET /ui/api/dlq/{topic}`: its latest dead letters (100 per partition), newest first.
pub async fn dead_letters(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap, Params(topic): Params<String>) -> Answer {
    admit!(dashboard, method, headers);
    dead_letter_topic(&dashboard, &topic)?;
    let broker = dashboard.broker.clone();
    let name = topic.clone();
    let letters = blocking("reading the dead letters", move || {
        let broker = broker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        broker.dead_letters(&name, LETTERS_PER_PARTITION).map_err(|e| e.to_string())
    })
    .await?;
    Ok(Json(json!({ "topic": topic, "dead_letters": letters.iter().map(summary).collect::<Vec<_>>() })))
}

async fn find_letter(dashboard: &Dashboard, topic: &str, partition: i32, offset: i64) -> Result<DeadLetter, Problem> {
    dead_letter_topic(dashboard, topic)?;
    let broker = dashboard.broker.clone();
    let name = topic.to_owned();
    let found = blocking("reading the dead letter", move || {
        let broker = broker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        broker.dead_letter(&name, partition, offset).map_err(|e| e.to_string())
    })
    .await?;
    found.ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "not-found", "No such dead letter", format!("no dead letter at {topic} {partition}/{offset}")))
}

/// `GET /ui/api/dlq/{topic}/{partition}/{offset}`: one dead letter with its headers and
/// its payload (decoded to JSON when it is an event of a known schema).
pub async fn dead_letter(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap, Params((topic, partition, offset)): Params<(String, i32, i64)>) -> Answer {
    admit!(dashboard, method, headers);
    let dl = find_letter(&dashboard, &topic, partition, offset).await?;
    let mut value = summary(&dl);
    value["headers"] = dl.headers.iter().map(|(k, v)| json!({ "key": String::from_utf8_lossy(k), "value": v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()) })).collect();
    value["payload"] = match dl.payload.as_deref() {
        None => Value::Null,
        Some(payload) => match dashboard.codec.split(payload).and_then(|(writer, datum)| decode_value(&writer, None, datum).map(|v| (writer, v))) {
            Ok((writer, decoded)) => json!({ "type": writer.name, "json": herald_schema::json::to_json(&decoded) }),
            Err(e) => json!({ "undecodable": e.to_string(), "hex": hex::encode(&payload[..payload.len().min(256)]), "bytes": payload.len() }),
        },
    };
    Ok(Json(value))
}

/// `POST /ui/api/dlq/{topic}/{partition}/{offset}/replay`: publishes the dead letter's
/// original record (key, value and headers unchanged) to its original topic;
/// `{"topic", "partition", "offset"}` once the broker acknowledged it.
pub async fn replay(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap, Params((topic, partition, offset)): Params<(String, i32, i64)>) -> Answer {
    let principal = admit!(dashboard, method, headers);
    let dl = find_letter(&dashboard, &topic, partition, offset).await?;
    if !dl.topic.starts_with(&dashboard.prefix) {
        return Err(Problem::forbidden(format!("{} is outside the topic prefix {:?}", dl.topic, dashboard.prefix)));
    }
    let sent = tokio::time::timeout(dashboard.deadline, dashboard.publisher.send_record(dl.replay_record())).await;
    match sent {
        Ok(Ok((to_partition, to_offset))) => {
            tracing::info!(principal = %principal.id, dlq = %topic, partition, offset, to = %dl.topic, to_partition, to_offset, "dashboard replayed a dead letter");
            Ok(Json(json!({ "topic": dl.topic, "partition": to_partition, "offset": to_offset, "from": { "topic": topic, "partition": partition, "offset": offset } })))
        }
        // An error about the record or the permissions (an invalid or forbidden topic, a
        // record too large) is not cured by waiting: no `503` with `Retry-After`.
        Ok(Err(e)) if !herald_bus::dead_letter::can_succeed_later(&e) => Err(Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "replay-refused",
            "Replay refused",
            format!("the broker refused the replay of this letter to {}, and trying again cannot help: {e}", dl.topic),
        )),
        Ok(Err(e)) => Err(unavailable("replaying", e)),
        Err(_) => Err(unavailable("replaying", format!("not acknowledged within {} ms", dashboard.deadline.as_millis()))),
    }
}

/// Percent-encodes one path segment.
fn encode(value: &str) -> String {
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
