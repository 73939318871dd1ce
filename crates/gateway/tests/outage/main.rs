//! The broker stopped and restarted under load: every `202` is in the topic exactly once,
//! every other answer is a `503` with `Retry-After`, no request waits past the deadline,
//! the breaker's state shows on `/metrics` and `/health`, and the gateway recovers by
//! itself. Runs a private broker (scripts/kafka on free
//! ports), so it needs Java and the Kafka jars like `scripts/kafka start`.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../broker/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{order, Running};

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    id: Option<String>,
    retry_after: bool,
    elapsed: Duration,
    at: Instant,
}

const DEADLINE_MS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_stopped_and_restarted_under_load() {
    let broker = herald_testkit::PrivateBroker::new("gw-outage");
    broker.run("start").await;
    let kafka = broker.config();
    let topic = herald_testkit::topic(&kafka, "gw.outage", 3).await;
    let toml = format!("[breaker]\nfailures = 2\nopen_ms = 1000\n{}", support::orders_route(&topic));
    let text = support::config_text(&toml).replace("deadline_ms = 5000", &format!("deadline_ms = {DEADLINE_MS}"));
    let config = herald_gateway::Config::parse(&text).unwrap();
    // This test binary's one test owns the process's metrics recorder.
    let options = herald_gateway::Options { metrics: Some(herald_ops::install_metrics().unwrap()), ..Default::default() };
    let gateway = herald_gateway::Gateway::new(config, &kafka, options).await.unwrap();
    let running = Running::serve(gateway, &kafka).await;
    let url = running.url.clone();

    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..8 {
        let (answers, stop, url) = (answers.clone(), stop.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let mut body = order(&format!("c-{client}"));
                body["order_id"] = format!("o-{client}-{n}").into();
                let started = Instant::now();
                let response = http.post(format!("{url}/orders")).json(&body).send().await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let json: serde_json::Value = response.json().await.unwrap_or_default();
                let answer = Answer { status, id: json["id"].as_str().map(str::to_owned), retry_after, elapsed: started.elapsed(), at: Instant::now() };
                answers.lock().unwrap().push(answer);
                if status == 503 {
                    // A well-behaved client backs off a little; not needed for correctness.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let count = |status: u16| answers.lock().unwrap().iter().filter(|a| a.status == status).count();
    herald_testkit::wait_until(Duration::from_secs(30), "some 202s before the outage", || async { count(202) >= 50 }).await;

    broker.run("stop").await;
    let stopped_at = Instant::now();
    herald_testkit::wait_until(Duration::from_secs(30), "503s while the broker is down", || async { count(503) >= 20 }).await;
    // The breaker shows on /metrics (the gauge follows each request's admission) and on
    // /health, which is unhealthy while it is open.
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let breaker_gauge = |value: u8| {
        let (probe, url) = (probe.clone(), url.clone());
        async move {
            let text = probe.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
            text.lines().any(|l| l == format!("herald_gateway_breaker_state {value}"))
        }
    };
    let health = || {
        let (probe, url) = (probe.clone(), url.clone());
        async move {
            let response = probe.get(format!("{url}/health")).send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["details"]["breaker"].as_str().unwrap_or_default().to_owned())
        }
    };
    herald_testkit::wait_until(Duration::from_secs(30), "the breaker open on /metrics", || breaker_gauge(1)).await;
    herald_testkit::wait_until(Duration::from_secs(30), "/health unhealthy with the breaker open", || async { health().await == (503, "open".to_owned()) }).await;
    // Stay down past a few breaker cycles.
    herald_testkit::wait_until(Duration::from_secs(30), "the outage lasting 6 s", || async { stopped_at.elapsed() > Duration::from_secs(6) }).await;
    broker.run("start").await;
    let restarted_at = Instant::now();
    let accepted_after = |since: Instant| answers.lock().unwrap().iter().filter(|a| a.status == 202 && a.at > since).count();
    herald_testkit::wait_until(Duration::from_secs(60), "202s again after the restart", || async { accepted_after(restarted_at) >= 50 }).await;
    herald_testkit::wait_until(Duration::from_secs(30), "the breaker closed on /metrics", || breaker_gauge(0)).await;
    herald_testkit::wait_until(Duration::from_secs(30), "/health healthy again", || async { health().await == (200, "closed".to_owned()) }).await;
    let recovered_in = answers.lock().unwrap().iter().filter(|a| a.status == 202 && a.at > restarted_at).map(|a| a.at - restarted_at).min();
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for a in &answers {
        *by_status.entry(a.status).or_default() += 1;
    }
    let slowest = answers.iter().map(|a| a.elapsed).max().unwrap();
    eprintln!("answers by status {by_status:?}; slowest {slowest:?}; first 202 {recovered_in:?} after the broker's restart");
    for a in &answers {
        assert!(a.status == 202 || a.status == 503, "every failure is a 503: {a:?}");
        if a.status == 503 {
            assert!(a.retry_after, "a 503 carries Retry-After: {a:?}");
        }
    }
    assert!(slowest < Duration::from_millis(DEADLINE_MS + 1500), "no request waits past its deadline: {slowest:?}");

    let accepted: Vec<&str> = answers.iter().filter(|a| a.status == 202).map(|a| a.id.as_deref().unwrap()).collect();
    let total = herald_testkit::record_count(&kafka, &topic).await as usize;
    let events = support::events(&kafka, &topic, total).await;
    let mut in_topic: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *in_topic.entry(e.headers["ce_id"].clone()).or_default() += 1;
    }
    for id in &accepted {
        assert_eq!(in_topic.get(*id).copied(), Some(1), "202 event {id} is in the topic exactly once");
    }
    let unacknowledged_written = events.len() - accepted.len();
    eprintln!("{} events in the topic: {} answered 202, {unacknowledged_written} written although answered 503", events.len(), accepted.len());
    running.stop().await;
}

/// An idle gateway whose broker goes away says so on `/health` (before, only the breaker
/// could, and it opens only when requests fail: an idle gateway reported healthy for the
/// whole outage), and is healthy again once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gateway_is_unhealthy_while_its_broker_is_away() {
    let broker = herald_testkit::PrivateBroker::new("gw-idle-outage");
    broker.run("start").await;
    let kafka = broker.config();
    let topic = herald_testkit::topic(&kafka, "gw.idle", 1).await;
    let running = Running::start(&kafka, &support::orders_route(&topic)).await;
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let health = || {
        let (probe, url) = (probe.clone(), running.url.clone());
        async move {
            let response = probe.get(format!("{url}/health")).send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["details"]["kafka"]["reachable"].as_bool(), body["details"]["breaker"].as_str().unwrap_or_default().to_owned())
        }
    };
    herald_testkit::wait_until(Duration::from_secs(20), "healthy, the cluster checked", || async { health().await == (200, Some(true), "closed".to_owned()) }).await;
    broker.run("stop").await;
    // No request is sent: the breaker stays closed, the check alone turns /health.
    herald_testkit::wait_until(Duration::from_secs(20), "/health unhealthy with the broker away", || async { health().await == (503, Some(false), "closed".to_owned()) }).await;
    broker.run("start").await;
    herald_testkit::wait_until(Duration::from_secs(60), "/health healthy again", || async { health().await == (200, Some(true), "closed".to_owned()) }).await;
    running.stop().await;
}

/// A broker frozen past `broker.session.timeout.ms` (9 s) is fenced for a moment once it
/// thaws, and a metadata response then lists no broker. librdkafka drops every broker such
/// a response leaves out and does not re-bootstrap after it (confluentinc/librdkafka#5301):
/// the gateway's producer and its idempotency reader were left with no broker, and every
/// request got `503` for good (in 5 of 8 tries of an outside probe). They now get their
/// bootstrap servers back when a check goes unanswered, and the gateway recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_recovers_after_its_broker_was_frozen_past_its_session() {
    let broker = herald_testkit::PrivateBroker::new("gw-frozen");
    broker.run("start").await;
    let kafka = broker.config();
    let topic = herald_testkit::topic(&kafka, "gw.frozen", 1).await;
    let running = Running::start(&kafka, &support::orders_route(&topic)).await;
    let (http, url) = (running.http.clone(), running.url.clone());
    let post = move |key: bool| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut request = http.post(format!("{url}/orders")).json(&order("c-1"));
            if key {
                request = request.header("Idempotency-Key", herald_testkit::unique("k"));
            }
            request.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };
    let health = || {
        let (http, url) = (running.http.clone(), running.url.clone());
        async move { http.get(format!("{url}/health")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    herald_testkit::wait_until(Duration::from_secs(30), "202 with and without a key", || async { post(false).await == 202 && post(true).await == 202 }).await;

    // Requests all along, as in production: failing sends make the clients ask for
    // metadata, some of them while the broker is fenced.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (post, stop) = (post.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    post(i % 2 == 0).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.freeze();
    // The fault itself: frozen long enough for the controller to fence the broker.
    tokio::time::sleep(Duration::from_secs(12)).await;
    broker.thaw();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    herald_testkit::wait_until(Duration::from_secs(60), "202 without a key, 202 with one, and /health 200 after the thaw", || async {
        post(false).await == 202 && post(true).await == 202 && health().await == 200
    })
    .await;
    running.stop().await;
}
