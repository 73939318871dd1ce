//! The tracker against the real broker: sagas published with their correlation and
//! causation headers on the shop's topics (unique names per test), read back through the
//! store, HTTP and metrics; a restart resumes without recording anything twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::{Publisher, PublisherOptions};
use herald_testkit::{unique, wait_until};
use herald_tracker::query::{self, Detail, Filter, Summary};
use herald_tracker::script::{Script, Step};
use herald_tracker::shop::Shop;
use herald_tracker::{Runner, State, TrackedSaga};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// Every saga in the store (read on a blocking thread: PostgreSQL's client blocks).
async fn sagas(store: &Arc<dyn herald_projector::Store>) -> Vec<Summary> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = store.connect().expect("connect");
        query::list(&mut *conn, &Filter { stuck_after: Duration::from_secs(60), ..Filter::default() }, chrono::Utc::now()).unwrap_or_default()
    })
    .await
    .expect("read")
}

fn by_subject(all: &[Summary]) -> BTreeMap<String, (State, bool, i64)> {
    all.iter().map(|s| (s.subject.clone(), (s.state, s.stuck, s.events))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_shows_completed_compensated_stuck_and_violating_sagas_sqlite() {
    let dir = std::env::temp_dir().join(unique("herald-tracker"));
    std::fs::create_dir_all(&dir).unwrap();
    scenario(&format!("sqlite:{}", dir.join("sagas.db").display()), true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_shows_completed_compensated_stuck_and_violating_sagas_postgres() {
    if let Some(url) = herald_testkit::fresh_postgres("herald_tracker").await {
        scenario(&url, false).await;
    }
}

/// The whole story on the store at `url`; `metrics`: also install the process's
/// Prometheus recorder and check the gauges (once per test binary).
async fn scenario(url: &str, with_metrics: bool) {
    let config = herald_testkit::kafka().await;
    let prefix = format!("{}.", unique("t.tracker"));
    let specs: Vec<TopicSpec> = Shop::topics().iter().map(|t| TopicSpec::new(format!("{prefix}{t}")).partitions(3)).collect();
    create_topics(&config, &specs).await.expect("topics");
    let store = herald_projector::store::open(url).unwrap();
    let group = unique("g.tracker");

    let tracker = Runner::<Shop>::new(config.clone(), group.clone(), store.clone())
        .topic_prefix(&prefix)
        .stuck_after(Duration::from_secs(60))
        .report_every(Duration::from_millis(100))
        .build()
        .await
        .expect("tracker");
    let mut router = tracker.router();
    if with_metrics {
        router = router.merge(herald_ops::router(herald_ops::install_metrics().expect("recorder"), tracker.health()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let stop = CancellationToken::new();
    let running = tokio::spawn(tracker.run(stop.clone().cancelled_owned()));

    let publisher = Publisher::new(&config, PublisherOptions::new("/test/script")).unwrap();
    let script = Script::new(&publisher, &prefix);
    let (now, old) = (chrono::Utc::now(), chrono::Utc::now() - chrono::Duration::hours(1));
    let ms = chrono::Duration::milliseconds(10);
    use Step::*;
    script.saga("o-done", &[Placed, Reserved, Charged, Confirmed], now, ms).await.unwrap();
    let undone = script.saga("o-undone", &[Placed, Reserved, Charged, Cancelled, Released, Refunded], now, ms).await.unwrap();
    script.saga("o-rejected", &[Placed, Rejected, Cancelled], now, ms).await.unwrap();
    script.saga("o-stuck", &[Placed, Reserved], old, ms).await.unwrap();
    // Cancelled, and the reservation never released: the guarantee is violated.
    script.saga("o-stranded", &[Placed, Reserved, Cancelled], old, ms).await.unwrap();
    // Confirmed, then its stock released: violated whatever comes next.
    script.saga("o-twice", &[Placed, Reserved, Charged, Confirmed, Released], now, ms).await.unwrap();
    let running_saga = script.saga("o-running", &[Placed], now, ms).await.unwrap();

    wait_until(WAIT, "the tracker recorded all 24 events of the 7 sagas", || {
        let store = store.clone();
        async move {
            let all = sagas(&store).await;
            all.len() == 7 && all.iter().map(|s| s.events).sum::<i64>() == 24
        }
    })
    .await;
    let states = by_subject(&sagas(&store).await);
    let expected: BTreeMap<String, (State, bool, i64)> = [
        ("o-done", (State::Completed, false, 4)),
        ("o-undone", (State::Compensated, false, 6)),
        ("o-rejected", (State::Compensated, false, 3)),
        ("o-stuck", (State::Stuck, true, 2)),
        ("o-stranded", (State::Failed, true, 3)),
        ("o-twice", (State::Failed, false, 5)),
        ("o-running", (State::Running, false, 1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(states, expected);

    // Over HTTP.
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.get(url).send().await.expect("http") }
    };
    let stuck: Vec<Summary> = get("/sagas?stuck=true".into()).await.json().await.unwrap();
    let mut stuck: Vec<&str> = stuck.iter().map(|s| s.subject.as_str()).collect();
    stuck.sort();
    assert_eq!(stuck, ["o-stranded", "o-stuck"]);
    let failed: Vec<Summary> = get("/sagas?state=failed".into()).await.json().await.unwrap();
    let reasons: BTreeMap<&str, &str> = failed.iter().map(|s| (s.subject.as_str(), s.reason.as_deref().unwrap_or(""))).collect();
    assert!(reasons["o-stranded"].contains("never saw shop.inventory.StockReleased (compensates shop.inventory.StockReserved)"), "{reasons:?}");
    assert_eq!(reasons["o-twice"], "completed, but step shop.inventory.StockReserved was compensated");
    let old_ones: Vec<Summary> = get("/sagas?older_than=30m".into()).await.json().await.unwrap();
    assert_eq!(old_ones.len(), 2);

    let id = undone[0].id.to_string();
    let shown: Detail = get(format!("/sagas/{id}")).await.json().await.unwrap();
    assert_eq!((shown.summary.id.as_str(), shown.summary.state, shown.summary.outcome.as_deref()), (id.as_str(), State::Compensated, Some("shop.orders.OrderCancelled")));
    let where_sent: Vec<(String, i32, i64)> = undone.iter().map(|p| (p.id.to_string(), p.partition, p.offset)).collect();
    let where_read: Vec<(String, i32, i64)> = shown.timeline.iter().map(|e| (e.event_id.clone(), e.partition, e.offset)).collect();
    assert_eq!(where_read, where_sent);
    let types: Vec<&str> = shown.timeline.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["shop.orders.OrderPlaced", "shop.inventory.StockReserved", "shop.payments.PaymentCharged", "shop.orders.OrderCancelled", "shop.inventory.StockReleased", "shop.payments.PaymentRefunded"]);
    assert!(shown.timeline.windows(2).all(|w| w[1].causation_id.as_deref() == Some(w[0].event_id.as_str())), "{:?}", shown.timeline);
    assert_eq!(shown.timeline[2].topic, format!("{prefix}shop.payments"));
    assert!(shown.timeline.iter().all(|e| e.source == "/test/script" && e.subject == "o-undone"));
    assert_eq!(get("/sagas/no-such-saga".into()).await.status(), reqwest::StatusCode::NOT_FOUND);
    if with_metrics {
        assert_eq!(get("/health".into()).await.status(), reqwest::StatusCode::OK);
        wait_until(WAIT, "the violations gauge counts the two failed sagas", || {
            let get = get("/metrics".into());
            async move { get.await.text().await.unwrap_or_default().lines().any(|l| l == "herald_saga_guarantee_violations{saga=\"shop_saga\"} 2") }
        })
        .await;
    }

    // Stop; start again on the same store and groups: the next event is recorded once and
    // nothing before it twice.
    stop.cancel();
    running.await.unwrap().expect("the tracker stopped cleanly");
    let tracker = Runner::<Shop>::new(config.clone(), group, store.clone()).topic_prefix(&prefix).stuck_after(Duration::from_secs(60)).build().await.expect("tracker again");
    let stop = CancellationToken::new();
    let running = tokio::spawn(tracker.run(stop.clone().cancelled_owned()));
    let mut meta = publisher.metadata_for(&herald_shop::OrderConfirmed::example("o-running", "p"));
    meta.correlation_id = Some(running_saga[0].id.to_string());
    meta.causation_id = Some(running_saga[0].id.to_string());
    let confirmed = herald_bus::Topic::<herald_shop::OrderEvent>::named(format!("{prefix}shop.orders"));
    publisher.publish_with(&confirmed, &herald_shop::OrderConfirmed::example("o-running", "p"), meta).await.unwrap();
    wait_until(WAIT, "the restarted tracker recorded the confirmation", || {
        let store = store.clone();
        async move { sagas(&store).await.iter().any(|s| s.subject == "o-running" && s.events == 2) }
    })
    .await;
    let all = sagas(&store).await;
    assert_eq!(all.iter().map(|s| s.events).sum::<i64>(), 25);
    // Confirmed without its reservation and charge: not completed, waiting for them.
    let saga = all.iter().find(|s| s.subject == "o-running").unwrap();
    assert_eq!(saga.state, State::Running);
    assert!(saga.reason.as_deref().unwrap_or("").contains("shop.inventory.StockReserved"), "{saga:?}");
    stop.cancel();
    running.await.unwrap().expect("stopped");
}
