//! Query routes against the real broker: backends are small HTTP servers registered in a
//! registry topic of their own (through `Registration`, as a view's process does), each on
//! its own runtime so that "killing" one closes its every connection.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use herald_bus::KafkaConfig;
use herald_gateway::{Config, Gateway, Options};
use herald_services::{Instance, Registration, Settings};
use herald_testkit::{unique, wait_until};
use serde_json::{json, Value};

use crate::support::{config_text, Running};

/// What a backend does with a view request.
#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Answers `{"instance", "order_id"}`; `missing` is a 404, `boom` a 500, `moved` a
    /// redirect, `busy` a 429 with `Retry-After`, `cached` a 200 with an `ETag` (a 304 to
    /// `If-None-Match` with it).
    Serve,
    /// Never answers.
    Hang,
    /// Serves, each answer after this long.
    Delay(Duration),
    /// Answers `/health`, and closes every other connection once it has read the request,
    /// without a word: as an instance that crashes on the request, or a pooled connection
    /// to one just killed.
    HangUp,
}

/// A registered backend of `order-status` on its own runtime.
pub struct Backend {
    runtime: Option<tokio::runtime::Runtime>,
    registration: Option<Registration>,
}

impl Backend {
    /// Serves `order-status`'s view routes (`GET /views/order_status` answers `[]`) and
    /// registers as instance `id` on `registry`.
    pub async fn start(kafka: &KafkaConfig, registry: &Settings, id: &str, behaviour: Behaviour) -> Backend {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let me = id.to_owned();
        let view = move |Path(order): Path<String>, request: axum::http::HeaderMap| {
            let me = me.clone();
            async move {
                match behaviour {
                    Behaviour::Hang => std::future::pending::<()>().await,
                    Behaviour::Delay(by) => tokio::time::sleep(by).await,
                    Behaviour::Serve | Behaviour::HangUp => {}
                }
                match order.as_str() {
                    "missing" => (StatusCode::NOT_FOUND, axum::Json(json!({"error": "no such order", "instance": me}))).into_response(),
                    "boom" => (StatusCode::INTERNAL_SERVER_ERROR, "broken").into_response(),
                    "moved" => axum::response::Redirect::temporary("/views/order_status/elsewhere").into_response(),
                    "busy" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down").into_response(),
                    "cached" if request.get("if-none-match").is_some_and(|v| v == "\"v1\"") => (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")]).into_response(),
                    "cached" => ([("etag", "\"v1\""), ("cache-control", "max-age=5"), ("x-view", "order-status"), ("keep-alive", "timeout=5")], axum::Json(json!({"instance": me, "order_id": order}))).into_response(),
                    _ => axum::Json(json!({"instance": me, "order_id": order})).into_response(),
                }
            }
        };
        let router = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .route("/views/order_status", axum::routing::get(|| async { axum::Json(json!([])) }))
            .route("/views/order_status/{order_id}", axum::routing::get(view));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            match behaviour {
                Behaviour::HangUp => hang_up(listener).await,
                _ => {
                    let _ = axum::serve(listener, router).await;
                }
            }
        });
        let instance = Instance::new("order-status", id, address, "0.1.0").unwrap();
        let registration = Registration::register(kafka, registry, instance).await.unwrap();
        Backend { runtime: Some(runtime), registration: Some(registration) }
    }

    /// As `kill -9` would: every connection closes, no tombstone (the registry still lists
    /// it until the TTL).
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        drop(self.registration.take());
    }
}

/// [`Behaviour::HangUp`]'s server.
async fn hang_up(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            if head.starts_with(b"GET /health ") {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            }
        });
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A registry topic of its own, with a TTL long enough that only the gateway's own health
/// keeping can route around a dead backend.
fn registry() -> Settings {
    Settings::default().topic(unique("t.services")).heartbeat(Duration::from_millis(500)).ttl(Duration::from_secs(120))
}

fn query_toml(balance: &str, deadline_ms: u64, health_interval_ms: u64) -> String {
    format!(
        r#"
[discovery]
health_interval_ms = {health_interval_ms}
health_timeout_ms = 200
eject_failures = 2
eject_ms = 60000
breaker_failures = 2
breaker_open_ms = 60000
retry_after_ms = 2000

[[query]]
name = "order-status"
path = "/orders/{{order_id}}"
service = "order-status"
upstream = "/views/order_status/{{order_id}}"
balance = "{balance}"
deadline_ms = {deadline_ms}
"#
    )
}

async fn gateway(kafka: &KafkaConfig, registry: &Settings, toml: &str) -> (Gateway, Running) {
    let config = Config::parse(&config_text(toml)).unwrap();
    let options = Options { registry: Some(registry.clone()), ..Options::default() };
    let gateway = Gateway::new(config, kafka, options).await.unwrap();
    let running = Running::serve(gateway.clone(), kafka).await;
    (gateway, running)
}

async fn get(running: &Running, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = running.http.get(format!("{}{path}", running.url)).send().await.unwrap();
    let headers = response.headers().clone();
    let (status, body) = crate::support::answer(response).await;
    (status, body, headers)
}

/// The status and body of `GET path` sent as written: reqwest, like every URL parser,
/// would resolve its dot segments before sending.
async fn raw_get(url: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    (status, answer.split_once("\r\n\r\n").map_or_else(String::new, |(_, body)| body.to_owned()))
}

async fn backends_seen(running: &Running) -> usize {
    let (_, health, _) = get(running, "/health").await;
    health["details"]["backends"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn consistent_hashing_keeps_a_key_on_one_instance_and_a_killed_one_costs_no_5xx() {
    let kafka = herald_testkit::kafka().await;
    let registry = registry();
    let mut a = Backend::start(&kafka, &registry, "a", Behaviour::Serve).await;
    let _b = Backend::start(&kafka, &registry, "b", Behaviour::Serve).await;
    let (gateway, running) = gateway(&kafka, &registry, &query_toml("consistent-hash", 2000, 600_000)).await;
    wait_until(Duration::from_secs(30), "the gateway sees both backends", || async { backends_seen(&running).await == 2 }).await;

    // Each key always goes to the same instance; the keys spread over both.
    let keys: Vec<String> = (0..24).map(|k| format!("order-{k}")).collect();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..3 {
        for key in &keys {
            let (status, body, _) = get(&running, &format!("/orders/{key}")).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["order_id"], key.as_str());
            let instance = body["instance"].as_str().unwrap().to_owned();
            if round == 0 {
                owner.insert(key.clone(), instance);
            } else {
                assert_eq!(owner[key], instance, "key {key} moved in round {round}");
            }
        }
    }
    let used: BTreeSet<&String> = owner.values().collect();
    assert_eq!(used.len(), 2, "both instances own keys: {owner:?}");

    // The upstream's 404 passes through as it is.
    let (status, body, _) = get(&running, "/orders/missing").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "no such order");

    // A dot segment, which a URL parser resolves against the upstream path (`..` and its
    // percent-encoded forms alike), is refused before anything is forwarded.
    // So is a segment that is not UTF-8 once percent-decoded: the path matched the route,
    // its parameter is bad (a 400, not a 404 that says no such route).
    for segment in ["..", "%2E%2E", "%2e", ".%2E", "a%FFb"] {
        let (status, body) = raw_get(&running.url, &format!("/orders/{segment}")).await;
        assert_eq!(status, 400, "{segment}");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("problem JSON: {body}"));
        assert_eq!(problem["type"], "urn:herald:gateway:invalid-parameter", "not a body problem: {body}");
    }

    // a dies without deregistering: it stays live in the registry for the TTL (2 min), so
    // only the gateway's health keeping moves its keys. Not one request fails: a refused
    // connection is retried on b, and after two of them a is ejected and its circuit open
    // (the health checks run only at the start here: outcomes alone do it).
    a.kill();
    for round in 0..3 {
        for key in &keys {
            let (status, body, _) = get(&running, &format!("/orders/{key}")).await;
            assert_eq!(status, 200, "round {round}, key {key}: {body}");
            assert_eq!(body["instance"], "b", "round {round}, key {key}");
        }
    }
    let route = &gateway.queries()[0];
    assert!(route.balancer.is_ejected("order-status/a"), "a is ejected");
    assert_eq!(report(&running, "a").await["breaker"], "open");
    assert_eq!(report(&running, "b").await["breaker"], "closed");
    running.stop().await;
}

/// Waits until every one of `instances` passed a health check.
async fn checked_healthy(running: &Running, instances: &[&str]) {
    wait_until(Duration::from_secs(30), "every backend checked healthy", || async {
        for instance in instances {
            if report(running, instance).await["checked"] != "healthy" {
                return false;
            }
        }
        true
    })
    .await;
}

async fn report(running: &Running, instance: &str) -> Value {
    let (_, health, _) = get(running, "/health").await;
    health["details"]["backends"].as_array().unwrap().iter().find(|b| b["instance"] == instance).cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_instance_that_hangs_up_before_answering_costs_no_5xx() {
    let kafka = herald_testkit::kafka().await;
    let registry = registry();
    let _a = Backend::start(&kafka, &registry, "a", Behaviour::HangUp).await;
    let _b = Backend::start(&kafka, &registry, "b", Behaviour::Serve).await;
    let (_gateway, running) = gateway(&kafka, &registry, &query_toml("round-robin", 2000, 600_000)).await;
    checked_healthy(&running, &["a", "b"]).await;
    // Round robin asks a for every other request until its circuit opens (two failures):
    // each time a hangs up, b answers in its stead.
    for _ in 0..6 {
        let (status, body, _) = get(&running, "/orders/o-1").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["instance"], "b");
    }
    assert_eq!(report(&running, "a").await["breaker"], "open", "a was asked and failed");
    running.stop().await;
}

#[tokio::test]
async fn active_health_checks_keep_requests_off_a_dead_backend() {
    let kafka = herald_testkit::kafka().await;
    let registry = registry();
    let mut a = Backend::start(&kafka, &registry, "a", Behaviour::Serve).await;
    let _b = Backend::start(&kafka, &registry, "b", Behaviour::Serve).await;
    let (_gateway, running) = gateway(&kafka, &registry, &query_toml("round-robin", 2000, 100)).await;
    checked_healthy(&running, &["a", "b"]).await;
    a.kill();
    wait_until(Duration::from_secs(10), "a's health check fails", || async { report(&running, "a").await["checked"] == "failing" }).await;
    for _ in 0..6 {
        let (status, body, _) = get(&running, "/orders/o-1").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["instance"], "b");
    }
    assert_eq!(report(&running, "a").await["breaker"], "closed", "a was not even asked");
    running.stop().await;
}

#[tokio::test]
async fn round_robin_spreads_and_an_upstream_5xx_is_a_502() {
    let kafka = herald_testkit::kafka().await;
    let registry = registry();
    let _a = Backend::start(&kafka, &registry, "a", Behaviour::Serve).await;
    let _b = Backend::start(&kafka, &registry, "b", Behaviour::Serve).await;
    let (_gateway, running) = gateway(&kafka, &registry, &query_toml("round-robin", 2000, 600_000)).await;
    wait_until(Duration::from_secs(30), "the gateway sees both backends", || async { backends_seen(&running).await == 2 }).await;
    let mut answered: Vec<String> = Vec::new();
    for _ in 0..6 {
        let (status, body, _) = get(&running, "/orders/same-key").await;
        assert_eq!(status, 200, "{body}");
        answered.push(body["instance"].as_str().unwrap().to_owned());
    }
    assert_eq!(answered.iter().filter(|i| *i == "a").count(), 3, "{answered:?}");
    let (status, body, headers) = get(&running, "/orders/boom").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["type"], "urn:herald:gateway:upstream-error");
    assert_eq!(headers.get("content-type").unwrap(), "application/problem+json");
    // A redirect is not followed: the view is misconfigured.
    let (status, body, _) = get(&running, "/orders/moved").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["detail"].as_str().unwrap_or("").contains("redirects are not followed"), "{body}");
    // The answer's end-to-end headers pass through (only Content-Type did), hop-by-hop ones
    // do not; so does a 429's Retry-After, and a conditional request gets its 304.
    let (status, body, headers) = get(&running, "/orders/cached").await;
    assert_eq!(status, 200, "{body}");
    for (name, value) in [("etag", "\"v1\""), ("cache-control", "max-age=5"), ("x-view", "order-status"), ("content-type", "application/json")] {
        assert_eq!(headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}: {headers:?}");
    }
    assert!(headers.get("keep-alive").is_none(), "hop-by-hop: {headers:?}");
    let (status, _, headers) = get(&running, "/orders/busy").await;
    assert_eq!((status, headers.get("retry-after").and_then(|v| v.to_str().ok())), (429, Some("7")), "{headers:?}");
    let conditional = running.http.get(format!("{}/orders/cached", running.url)).header("if-none-match", "\"v1\"").send().await.unwrap();
    assert_eq!(conditional.status().as_u16(), 304);
    running.stop().await;
}

#[tokio::test]
async fn least_outstanding_sends_most_requests_to_the_instance_that_answers_fastest() {
    let kafka = herald_testkit::kafka().await;
    let registry = registry();
    let _slow = Backend::start(&kafka, &registry, "slow", Behaviour::Delay(Duration::from_millis(300))).await;
    let _fast = Backend::start(&kafka, &registry, "fast", Behaviour::Serve).await;
    let (_gateway, running) = gateway(&kafka, &registry, &query_toml("least-outstanding", 2000, 600_000)).await;
    wait_until(Duration::from_secs(30), "the gateway sees both backends", || async { backends_seen(&running).await == 2 }).await;
    // Eight callers for two seconds: "slow" holds each request 300 ms, so it nearly always
    // has more in flight than "fast" and is picked only when it has none left.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let callers: Vec<_> = (0..8)
        .map(|c| {
            let (http, url) = (running.http.clone(), running.url.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                while std::time::Instant::now() < until {
                    let response = http.get(format!("{url}/orders/o-{c}")).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    let body: Value = response.json().await.unwrap();
                    answered.push(body["instance"].as_str().unwrap().to_owned());
                }
                answered
            })
        })
        .collect();
    let mut by_instance: BTreeMap<String, usize> = BTreeMap::new();
    for caller in callers {
        for instance in caller.await.unwrap() {
            *by_instance.entry(instance).or_default() += 1;
        }
    }
    let (slow, fast) = (by_instance.get("slow").copied().unwrap_or(0), by_instance.get("fast").copied().unwrap_or(0));
    // Round robin would give each half. Here about half the callers wait on "slow" at any
    // time and the others cycle through "fast": "fast" answers (300 ms + t) / t times as
    // many, t being a request's own time, at least 4 times as many with t up to 100 ms.
    assert!(slow > 0 && fast >= 3 * slow, "least outstanding: {by_instance:?}");
    running.stop().await;
}

#[tokio::test]
async fn no_registered_instance_is_a_503_with_retry_after() {
    let kafka = herald_testkit::kafka().await;
    let registry = registry();
    let (_gateway, running) = gateway(&kafka, &registry, &query_toml("consistent-hash", 2000, 600_000)).await;
    let (status, body, headers) = get(&running, "/orders/o-1").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "urn:herald:gateway:no-instance");
    assert_eq!(headers.get("retry-after").unwrap(), "2");
    // The route is in the OpenAPI document with its problems.
    let (_, openapi, _) = get(&running, "/openapi.json").await;
    let op = &openapi["paths"]["/orders/{order_id}"]["get"];
    assert_eq!(op["operationId"], "order-status");
    for status in ["200", "404", "502", "503", "504"] {
        assert!(op["responses"][status].is_object(), "{status}: {op}");
    }
    running.stop().await;
}

#[tokio::test]
async fn a_hanging_backend_is_a_504_within_the_deadline() {
    let kafka = herald_testkit::kafka().await;
    let registry = registry();
    let _hung = Backend::start(&kafka, &registry, "hung", Behaviour::Hang).await;
    let (_gateway, running) = gateway(&kafka, &registry, &query_toml("consistent-hash", 500, 600_000)).await;
    wait_until(Duration::from_secs(30), "the gateway sees the backend", || async { backends_seen(&running).await == 1 }).await;
    let started = std::time::Instant::now();
    let (status, body, _) = get(&running, "/orders/o-1").await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["type"], "urn:herald:gateway:upstream-timeout");
    assert!(took >= Duration::from_millis(500), "not before the deadline: {took:?}");
    assert!(took < Duration::from_millis(1500), "at the deadline, not long after: {took:?}");
    running.stop().await;
}
