//! The dashboard's JSON endpoints against the real broker: a real saga tracker registered
//! in the registry with scripted shop sagas, dead letters on a topic of the test's own
//! prefix, and the gateway with API keys (admin and not).

use std::time::Duration;

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::dead_letter::{self, Failure, Stage as DlqStage};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
use herald_gateway::auth::hash_key;
use herald_gateway::{Config, Gateway, Options};
use herald_services::{Instance, Registration};
use herald_testkit::{unique, wait_until};
use herald_tracker::script::{Script, Step};
use herald_tracker::shop::Shop;
use herald_tracker::{Runner, TrackedSaga};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{answer, config_text, Running};

pub const ADMIN_KEY: &str = "ui-admin-key-0123456789";
pub const READER_KEY: &str = "ui-reader-key-0123456789";
pub const WAIT: Duration = Duration::from_secs(60);

/// Everything the dashboard shows, running: the gateway, a tracker with four sagas, two
/// dead letters.
pub struct Stage {
    pub kafka: KafkaConfig,
    pub prefix: String,
    pub gateway: Running,
    /// The dead-letter topic and the topic its letters came from.
    pub dlq: String,
    pub input: String,
    /// One of the tracker's consumer groups.
    pub group: String,
    /// The subject of the compensated saga.
    pub compensated: String,
    /// Stops the tracker in order when the stage is dropped, also when a test panics (its
    /// runtime runs on a thread of its own, which would otherwise outlive the test).
    _stop: tokio_util::sync::DropGuard,
    registration: Option<Registration>,
    _dead_tracker: Registration,
    dir: std::path::PathBuf,
}

impl Stage {
    pub async fn start() -> Stage {
        let kafka = herald_testkit::kafka().await;
        let prefix = format!("{}.", unique("t.ui"));
        let mut specs: Vec<TopicSpec> = Shop::topics().iter().map(|t| TopicSpec::new(format!("{prefix}{t}")).partitions(3)).collect();
        let input = format!("{prefix}ui.input");
        let dlq = dead_letter::topic_for(&input);
        specs.push(TopicSpec::new(&input).partitions(1));
        specs.push(TopicSpec::new(&dlq).partitions(1));
        create_topics(&kafka, &specs).await.unwrap();

        // The tracker, registered as the dashboard looks for it.
        let dir = std::env::temp_dir().join(unique("herald-ui"));
        std::fs::create_dir_all(&dir).unwrap();
        let store = herald_projector::store::open(&format!("sqlite:{}", dir.join("sagas.db").display())).unwrap();
        let stop = CancellationToken::new();
        let (router, groups) = run_tracker(&kafka, &prefix, store, stop.clone()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tracker_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let group = groups[0].clone();
        let registry = herald_services::Settings::default().topic(format!("{prefix}herald.services"));
        let me = Instance::new("saga-tracker", "tracker-1", &tracker_url, "test").unwrap().with_consumer_groups(groups.clone());
        let registration = Registration::register(&kafka, &registry, me).await.unwrap();
        // And one killed a moment ago, still live in the registry (first in its order):
        // the dashboard asks the next.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let dead = Instance::new("saga-tracker", "tracker-0", format!("http://{closed}"), "test").unwrap();
        let dead_tracker = Registration::register(&kafka, &registry, dead).await.unwrap();

        // Four sagas: completed, compensated, stuck (an hour old), running.
        let publisher = Publisher::new(&kafka, PublisherOptions::new("/test/ui")).unwrap();
        let script = Script::new(&publisher, &prefix);
        let (now, old, ms) = (chrono::Utc::now(), chrono::Utc::now() - chrono::Duration::hours(1), chrono::Duration::milliseconds(10));
        let compensated = format!("o-undone-{}", unique("x"));
        use Step::*;
        script.saga(&format!("o-done-{}", unique("x")), &[Placed, Reserved, Charged, Confirmed], now, ms).await.unwrap();
        script.saga(&compensated, &[Placed, Reserved, Charged, Cancelled, Released, Refunded], now, ms).await.unwrap();
        script.saga(&format!("o-stuck-{}", unique("x")), &[Placed, Reserved], old, ms).await.unwrap();
        script.saga(&format!("o-running-{}", unique("x")), &[Placed], now, ms).await.unwrap();

        // Two dead letters: a keyed record with a header, and a tombstone without a key.
        let headers = OwnedHeaders::new().insert(Header { key: "ce_type", value: Some("test.Thing") });
        let originals = [
            OwnedMessage::new(Some(b"not avro".to_vec()), Some(b"k-1".to_vec()), input.clone(), rdkafka::Timestamp::NotAvailable, 0, 7, Some(headers)),
            OwnedMessage::new(None, None, input.clone(), rdkafka::Timestamp::NotAvailable, 0, 8, None),
        ];
        for (i, original) in originals.iter().enumerate() {
            let failure = Failure { stage: DlqStage::Decode, reason: format!("test failure {i}"), attempts: 0 };
            publisher.send_record(dead_letter::record(original, &failure, "g.ui.consumer", &dlq)).await.unwrap();
        }

        let toml = format!(
            "{}\n[[auth.api_key]]\nid = \"ops\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n[[auth.api_key]]\nid = \"reader\"\nsha256 = \"{}\"\nscopes = [\"orders:read\"]\n",
            crate::support::orders_route("ui.orders"),
            hash_key(ADMIN_KEY),
            hash_key(READER_KEY)
        );
        let config = Config::parse(&config_text(&toml)).unwrap();
        let options = Options { topic_prefix: Some(prefix.clone()), registry: Some(registry), ..Options::default() };
        let gateway = Gateway::new(config, &kafka, options).await.unwrap();
        let gateway = Running::serve(gateway, &kafka).await;
        Stage { kafka, prefix, gateway, dlq, input, group, compensated, _stop: stop.drop_guard(), registration: Some(registration), _dead_tracker: dead_tracker, dir }
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self.gateway.http.get(format!("{}{path}", self.gateway.url));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        answer(request.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self.gateway.http.post(format!("{}{path}", self.gateway.url));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        answer(request.send().await.unwrap()).await
    }

    /// The sagas endpoint once its counts by state are `expected`: the tracker reads each
    /// topic in a projector of its own, so a saga's count can reach four while some of its
    /// events are still on their way (a saga `running` that will be `completed`).
    pub async fn sagas_counted(&self, expected: &[(&str, i64)]) -> Value {
        let mut last = Value::Null;
        let counted = tokio::time::timeout(WAIT, async {
            loop {
                let (status, body) = self.get("/ui/api/sagas", Some(ADMIN_KEY)).await;
                if status == 200 && expected.iter().all(|(state, n)| body["counts"][*state].as_i64() == Some(*n)) {
                    return body;
                }
                last = body;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        counted.unwrap_or_else(|_| panic!("the dashboard's saga counts never became {expected:?}; it last answered {last}"))
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.registration.take() {
            let _ = r.shutdown().await;
        }
        self.gateway.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds the tracker and runs it on a runtime of its own, on its own thread, until `stop`:
/// dropped mid-run with the test's runtime (a failing test), its projector's blocking
/// shutdown would wait for a worker that runtime no longer drives, and the test would hang
/// instead of failing. Returns its routes (with `/health`) and its consumer groups.
async fn run_tracker(kafka: &KafkaConfig, prefix: &str, store: std::sync::Arc<dyn herald_projector::Store>, stop: CancellationToken) -> (axum::Router, Vec<String>) {
    let (built, ready) = tokio::sync::oneshot::channel();
    let (kafka, prefix) = (kafka.clone(), prefix.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async move {
            let tracker = Runner::<Shop>::new(kafka, unique("g.ui.tracker"), store).topic_prefix(&prefix).stuck_after(Duration::from_secs(60)).build().await.unwrap();
            let health = herald_ops::router(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle(), tracker.health());
            let _ = built.send((tracker.router().merge(health), tracker.consumer_groups()));
            let _ = tracker.run(stop.cancelled_owned()).await;
        });
    });
    ready.await.unwrap()
}

fn find<'a>(list: &'a Value, field: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v[field] == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_endpoints_need_the_admin_scope_and_show_the_pipeline() {
    let stage = Stage::start().await;
    let endpoints = ["/ui", "/ui/api/me", "/ui/api/topics", "/ui/api/groups", "/ui/api/services", "/ui/api/sagas", "/ui/api/dlq"];
    for path in endpoints {
        assert_eq!(stage.get(path, None).await.0, 401, "{path} without credentials");
        assert_eq!(stage.get(path, Some("wrong-key")).await.0, 401, "{path} with an unknown key");
        assert_eq!(stage.get(path, Some(READER_KEY)).await.0, 403, "{path} without the admin scope");
    }
    let replay = format!("/ui/api/dlq/{}/0/0/replay", stage.dlq);
    assert_eq!(stage.post(&replay, None).await.0, 401);
    assert_eq!(stage.post(&replay, Some(READER_KEY)).await.0, 403);
    let (status, page) = stage.get("/ui", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert!(page.as_str().is_some_and(|p| p.contains("<title>Herald dashboard</title>")), "{page}");
    let (status, me) = stage.get("/ui/api/me", Some(ADMIN_KEY)).await;
    assert_eq!((status, me["principal"].as_str()), (200, Some("ops")));

    // Topics of the prefix, with the dead letters counted.
    let (status, topics) = stage.get("/ui/api/topics", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{topics}");
    let names: Vec<&str> = topics["topics"].as_array().unwrap().iter().filter_map(|t| t["topic"].as_str()).collect();
    assert!(names.iter().all(|n| n.starts_with(&stage.prefix)), "{names:?}");
    assert!(names.contains(&format!("{}shop.orders", stage.prefix).as_str()), "{names:?}");
    let dlq_topic = find(&topics["topics"], "topic", &stage.dlq).unwrap();
    assert_eq!((dlq_topic["records"].as_i64(), dlq_topic["partitions"].as_i64()), (Some(2), Some(1)));
    let (_, dlq) = stage.get("/ui/api/dlq", Some(ADMIN_KEY)).await;
    let listed: Vec<(&str, i64)> = dlq["topics"].as_array().unwrap().iter().map(|t| (t["topic"].as_str().unwrap_or(""), t["count"].as_i64().unwrap_or(-1))).collect();
    assert!(listed.contains(&(stage.dlq.as_str(), 2)), "{listed:?}");
    // The tracker's own dead-letter topics are there too, empty; nothing else.
    assert!(listed.iter().all(|(t, n)| *t == stage.dlq || (t.ends_with(".dlq") && *n == 0)), "{listed:?}");

    // Sagas from the tracker found in the registry, and one saga's timeline.
    let sagas = stage.sagas_counted(&[("completed", 1), ("compensated", 1), ("stuck", 1), ("running", 1), ("failed", 0)]).await;
    assert_eq!(sagas["total"], 4, "{sagas}");
    let (_, compensated) = stage.get("/ui/api/sagas?state=compensated", Some(ADMIN_KEY)).await;
    assert_eq!(compensated["sagas"].as_array().map(Vec::len), Some(1));
    assert_eq!(compensated["sagas"][0]["subject"], stage.compensated.as_str());
    let id = compensated["sagas"][0]["id"].as_str().unwrap().to_owned();
    let (status, detail) = stage.get(&format!("/ui/api/sagas/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{detail}");
    let types: Vec<&str> = detail["timeline"].as_array().unwrap().iter().filter_map(|e| e["event_type"].as_str()).collect();
    assert_eq!(types.len(), 6, "{types:?}");
    assert_eq!(types[0], "shop.orders.OrderPlaced");
    assert_eq!(stage.get("/ui/api/sagas/no-such-saga", Some(ADMIN_KEY)).await.0, 404);

    // The registered tracker, healthy, and its group with its lag.
    let (_, services) = stage.get("/ui/api/services", Some(ADMIN_KEY)).await;
    let tracker = find(&services["services"], "instance", "tracker-1").unwrap();
    assert_eq!(find(&services["services"], "instance", "tracker-0").unwrap()["health"], "unreachable", "{services}");
    assert_eq!((tracker["health"].as_str(), tracker["registry"].as_str()), (Some("healthy"), Some("live")), "{services}");
    wait_until(WAIT, "the tracker's group is listed with no lag", || {
        let fetched = stage.get("/ui/api/groups", Some(ADMIN_KEY));
        let group = stage.group.clone();
        async move {
            let (_, body) = fetched.await;
            find(&body["groups"], "group", &group).is_some_and(|g| g["lag_records"] == 0 && g["partitions"].as_array().is_some_and(|p| !p.is_empty()))
        }
    })
    .await;
    let (_, groups) = stage.get("/ui/api/groups", Some(ADMIN_KEY)).await;
    assert_eq!(find(&groups["groups"], "group", &stage.group).unwrap()["services"], serde_json::json!(["saga-tracker"]));

    // Dead letters: the list, one letter, and what is not a dead-letter topic.
    let (status, letters) = stage.get(&format!("/ui/api/dlq/{}", stage.dlq), Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{letters}");
    let letters = letters["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 2);
    let keyed = letters.iter().find(|l| l["key"] == "k-1").unwrap();
    assert_eq!((keyed["topic"].as_str(), keyed["offset"].as_i64(), keyed["stage"].as_str()), (Some(stage.input.as_str()), Some(7), Some("decode")));
    let at = |l: &Value| format!("{}/{}", l["dlq_partition"], l["dlq_offset"]);
    let (status, shown) = stage.get(&format!("/ui/api/dlq/{}/{}", stage.dlq, at(keyed)), Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["headers"], serde_json::json!([{ "key": "ce_type", "value": "test.Thing" }]));
    assert_eq!(shown["payload"]["bytes"], 8, "{shown}");
    assert_eq!(stage.get(&format!("/ui/api/dlq/{}/0/99", stage.dlq), Some(ADMIN_KEY)).await.0, 404);
    assert_eq!(stage.get(&format!("/ui/api/dlq/{}/0/0", stage.input), Some(ADMIN_KEY)).await.0, 404);
    assert_eq!(stage.get("/ui/api/dlq/other.topic.dlq/0/0", Some(ADMIN_KEY)).await.0, 404);
    // A partition or offset that is not a number: a problem like every other error (it
    // was axum's plain text).
    for bad in [format!("/ui/api/dlq/{}/abc/1", stage.dlq), format!("/ui/api/dlq/{}/0/99999999999999999999", stage.dlq)] {
        let (status, problem) = stage.get(&bad, Some(ADMIN_KEY)).await;
        assert_eq!((status, problem["type"].as_str()), (400, Some("urn:herald:gateway:invalid-parameter")), "{bad}: {problem}");
    }
    let (status, problem) = stage.post(&format!("/ui/api/dlq/{}/0/abc/replay", stage.dlq), Some(ADMIN_KEY)).await;
    assert_eq!((status, problem["type"].as_str()), (400, Some("urn:herald:gateway:invalid-parameter")), "{problem}");

    // Replays land on the original topic as they were: key, value, headers; nulls stay null.
    let null_letter = letters.iter().find(|l| l["key"].is_null()).unwrap();
    for letter in [keyed, null_letter] {
        let (status, replayed) = stage.post(&format!("/ui/api/dlq/{}/{}/replay", stage.dlq, at(letter)), Some(ADMIN_KEY)).await;
        assert_eq!((status, replayed["topic"].as_str()), (200, Some(stage.input.as_str())), "{replayed}");
    }
    let back = herald_testkit::read_all(&stage.kafka, &stage.input, 2, Duration::from_secs(30)).await;
    assert_eq!(back.len(), 2);
    assert_eq!((back[0].key(), back[0].payload()), (Some(&b"k-1"[..]), Some(&b"not avro"[..])));
    let header = back[0].headers().map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect::<Vec<_>>());
    assert_eq!(header, Some(vec![("ce_type".to_owned(), Some(b"test.Thing".to_vec()))]));
    assert_eq!((back[1].key(), back[1].payload()), (None, None));

    // The two replayed records show as a rate on their topic (offset deltas between
    // samples half a second or more apart, over the last 10 s).
    wait_until(WAIT, "a rate on the topic the replays went to", || {
        let fetched = stage.get("/ui/api/topics", Some(ADMIN_KEY));
        let input = stage.input.clone();
        async move {
            let (_, body) = fetched.await;
            find(&body["topics"], "topic", &input).is_some_and(|t| t["records"] == 2 && t["rate"].as_f64().is_some_and(|r| r > 0.0))
        }
    })
    .await;

    // A letter whose original topic the broker refuses (not a valid name): trying again
    // cannot help, so 422, not 503 with Retry-After.
    let publisher = Publisher::new(&stage.kafka, PublisherOptions::new("/herald/tests")).unwrap();
    let invalid = OwnedMessage::new(Some(b"x".to_vec()), Some(b"k-2".to_vec()), format!("{}not a topic!", stage.prefix), rdkafka::Timestamp::NotAvailable, 0, 9, None);
    let failure = Failure { stage: DlqStage::Decode, reason: "test failure 2".to_owned(), attempts: 0 };
    let (partition, offset) = publisher.send_record(dead_letter::record(&invalid, &failure, "g.ui.consumer", &stage.dlq)).await.unwrap();
    let (status, problem) = stage.post(&format!("/ui/api/dlq/{}/{partition}/{offset}/replay", stage.dlq), Some(ADMIN_KEY)).await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:herald:gateway:replay-refused")), "{problem}");
    stage.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_logs_in_for_a_cookie_and_cookie_posts_need_the_ui_header() {
    let stage = Stage::start().await;
    let http = reqwest::Client::new();
    let login = |credential: &str| http.post(format!("{}/ui/login", stage.gateway.url)).json(&serde_json::json!({ "credential": credential })).send();
    assert_eq!(login("wrong").await.unwrap().status().as_u16(), 401);
    assert_eq!(login(READER_KEY).await.unwrap().status().as_u16(), 403);
    let response = login(ADMIN_KEY).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let cookie = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(ADMIN_KEY), "the cookie is a session token, not the key");
    let session = cookie.split(';').next().unwrap().to_owned();
    let me = http.get(format!("{}/ui/api/me", stage.gateway.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(me.status().as_u16(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["session"], true);
    // A cookie-authenticated POST without the page's header is refused (cross-site forms
    // cannot set it); with it, it goes through.
    let replay = format!("{}/ui/api/dlq/{}/0/0/replay", stage.gateway.url, stage.dlq);
    assert_eq!(http.post(&replay).header("cookie", &session).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(http.post(&replay).header("cookie", &session).header("x-herald-ui", "1").send().await.unwrap().status().as_u16(), 200);
    let out = http.post(format!("{}/ui/logout", stage.gateway.url)).header("cookie", &session).header("x-herald-ui", "1").send().await.unwrap();
    assert_eq!(out.status().as_u16(), 204);
    let after = http.get(format!("{}/ui/api/me", stage.gateway.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(after.status().as_u16(), 401);
    // Guessing through the form: past the login limit (3 attempts were made above), 429
    // with Retry-After, and the right key waits too.
    let mut answered = Vec::new();
    for _ in 0..herald_gateway::dashboard::access::LOGINS_PER_MINUTE {
        answered.push(login("guess").await.unwrap().status().as_u16());
    }
    assert_eq!(answered.last(), Some(&429), "{answered:?}");
    let refused = login(ADMIN_KEY).await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    assert!((1..=6).contains(&retry_after), "one attempt comes back every 6 s: {retry_after}");
    stage.stop().await;
}
