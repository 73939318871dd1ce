//! Rebuilds: a new version of the view is built from the beginning of the log while the
//! live one keeps serving queries and events keep arriving; the swap is atomic, so no
//! query ever sees an empty or partial view, and the swapped view equals the fold.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use herald_bus::Topic;
use herald_projector::rebuild::Options;
use herald_projector::status::OffsetsError;
use herald_projector::{store, Projector, ProjectorError, StopAt};
use herald_shop::OrderEvent;
use herald_testkit::{kafka, topic, unique};

use crate::projection::OrderTotals;
use crate::support::*;

async fn run_example(args: &[&str]) -> String {
    run_example_with_stderr(args).await.0
}

/// What the program printed on stdout and on stderr (not a terminal), when it succeeded.
async fn run_example_with_stderr(args: &[&str]) -> (String, String) {
    let out = tokio::time::timeout(DEADLINE, tokio::process::Command::new(example_binary()).args(args).env("RUST_LOG", "warn").output())
        .await
        .expect("finishes")
        .expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{args:?} failed: {stdout}\n{stderr}");
    (stdout, stderr)
}

async fn rebuild_while_serving(backend: Backend) {
    let Some(store_url) = fresh_store(backend).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.rebuild", 3).await);
    let publisher = publisher(&config);
    publish_orders(&publisher, &orders, 3000, 0..2000, 21).await;
    publish_poison(&publisher, &orders, 1, 1, "rb").await;
    let group = unique("g.rebuild");
    let live = start(&Opts::new(orders.name(), &group, &store_url)).await;
    wait_caught_up(&config, &store_url, orders.name(), "live version caught up").await;
    let customers = read_view(&store_url).await.len();
    assert_eq!(customers, 40, "every customer has a row");

    // Queries and events keep coming while the rebuild runs.
    let stop = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, queries, store_url, http) = (stop.clone(), queries.clone(), store_url.clone(), live.http.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let view = read_view(&store_url).await;
                assert_eq!(view.len(), 40, "a query saw a partial or empty view: {view:?}");
                assert!(view.values().map(|v| v.0).sum::<i64>() > 0, "{view:?}");
                let r = reqwest::get(format!("http://{http}/views/customer_totals/c-7")).await.expect("http");
                assert_eq!(r.status(), 200, "the view is served throughout");
                queries.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let writer = {
        let (stop, publisher, orders) = (stop.clone(), publisher.clone(), orders.clone());
        tokio::spawn(async move {
            let mut seed = 100u32;
            while !stop.load(Ordering::SeqCst) {
                // Mostly new orders (and some cancellations of earlier ones), at a modest pace.
                let low = 1000 + seed * 40;
                publish_orders(&publisher, &orders, 50, low..low + 60, u64::from(seed)).await;
                seed += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let (out, err) = run_example_with_stderr(&["--topic", orders.name(), "--group", &group, "--store", &store_url, "--rebuild", "--progress"]).await;
    assert!(out.contains("swapped: true"), "{out}");
    // Not a terminal: the progress comes as lines, saying how much of the topic is done.
    let sizes: Vec<u64> = err
        .lines()
        .filter_map(|l| l.strip_prefix("rebuild: ")?.split_once(" of ")?.1.split_once(" events")?.0.parse().ok())
        .collect();
    assert!(!sizes.is_empty() && sizes.iter().all(|&n| n >= 3001), "progress lines with the topic's size (at least the 3,001 records published first): {err}");
    let url = store_url.clone();
    let versions = tokio::task::spawn_blocking(move || herald_projector::views::versions(&*store::open(&url).expect("store"), "order_totals").expect("versions"))
        .await
        .expect("versions");
    assert_eq!(versions, Some((2, Some(1))), "version 2 is live, 1 kept for rollback");
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    reader.await.expect("no query saw a partial view");
    assert!(queries.load(Ordering::SeqCst) > 5, "queries ran during the rebuild");

    // The live process moved on to version 2 and catches up with it.
    wait_caught_up(&config, &store_url, orders.name(), "version 2 caught up").await;
    let v: serde_json::Value = reqwest::get(format!("http://{}/status", live.http)).await.expect("status").json().await.expect("json");
    assert_eq!(v["version"], 2, "{v}");
    live.terminate().await;
    let (expected, _) = fold_topic(&config, orders.name()).await;
    assert_eq!(non_zero(&read_view(&store_url).await), non_zero(&expected), "{backend:?}: the swapped view equals the fold");

    // Rollback makes version 1 live again; it catches up from where it stopped.
    let out = run_example(&["--topic", orders.name(), "--group", &group, "--store", &store_url, "--rollback"]).await;
    assert!(out.contains("live version: 1"), "{out}");
    let live = start(&Opts::new(orders.name(), &group, &store_url)).await;
    wait_caught_up(&config, &store_url, orders.name(), "version 1 caught up after rollback").await;
    live.terminate().await;
    assert_eq!(non_zero(&read_view(&store_url).await), non_zero(&expected));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_swaps_in_a_complete_view_while_serving_sqlite() {
    rebuild_while_serving(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_swaps_in_a_complete_view_while_serving_postgres() {
    rebuild_while_serving(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn time_travel_builds_the_view_as_of_given_offsets() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.travel", 2).await);
    let publisher = publisher(&config);
    publish_orders(&publisher, &orders, 800, 0..500, 31).await;
    let group = unique("g.travel");
    let live = start(&Opts::new(orders.name(), &group, &store_url)).await;
    wait_caught_up(&config, &store_url, orders.name(), "live caught up").await;
    live.terminate().await;
    let out = run_example(&["--topic", orders.name(), "--group", &group, "--store", &store_url, "--until-offsets", "0:100,1:150"]).await;
    assert!(out.contains("version 2") && out.contains("swapped: false"), "{out}");
    let (expected, _) = fold_topic_where(&config, orders.name(), |p, o| (p == 0 && o < 100) || (p == 1 && o < 150)).await;
    assert_eq!(non_zero(&read_table(&store_url, "customer_totals__v2").await), non_zero(&expected), "the view as of the offsets");
    // Another, earlier point in time builds a version of its own: version 2's positions
    // are past these offsets, and reusing it answered its view as of the later ones.
    let out = run_example(&["--topic", orders.name(), "--group", &group, "--store", &store_url, "--until-offsets", "0:40,1:60"]).await;
    assert!(out.contains("version 3") && out.contains("swapped: false"), "{out}");
    let (earlier, _) = fold_topic_where(&config, orders.name(), |p, o| (p == 0 && o < 40) || (p == 1 && o < 60)).await;
    assert_eq!(non_zero(&read_table(&store_url, "customer_totals__v3").await), non_zero(&earlier), "the view as of the earlier offsets");
    assert_ne!(non_zero(&earlier), non_zero(&expected), "the two points in time differ");
    let (all, _) = fold_topic(&config, orders.name()).await;
    assert_eq!(non_zero(&read_view(&store_url).await), non_zero(&all), "the live view is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_of_a_topic_that_does_not_exist_fails_and_leaves_the_live_view() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.rbmissing", 2).await);
    publish_orders(&publisher(&config), &orders, 200, 0..150, 41).await;
    let store = store::open(&store_url).expect("store");
    let group = unique("g.rbmissing");
    let built = herald_projector::rebuild::rebuild(&config, &orders, || OrderTotals, store.clone(), Options::new(&group), std::future::pending())
        .await
        .expect("the live version is built");
    assert_eq!((built.version, built.swapped), (1, true));
    let live = read_view(&store_url).await;
    assert!(!live.is_empty());

    let missing: Topic<OrderEvent> = Topic::named(unique("proj.never.created"));
    let failed = herald_projector::rebuild::rebuild(&config, &missing, || OrderTotals, store.clone(), Options::new(&group), std::future::pending()).await;
    match failed {
        Err(ProjectorError::Offsets(OffsetsError::UnknownTopic(t))) => assert_eq!(t, missing.name()),
        other => panic!("expected the unknown topic, got {other:?}"),
    }
    let versions = tokio::task::spawn_blocking(move || herald_projector::views::versions(&*store, "order_totals").expect("versions")).await.expect("versions");
    assert_eq!(versions, Some((1, None)), "the live version is unchanged");
    assert_eq!(read_view(&store_url).await, live, "and so is its view");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projector_that_stops_at_the_end_of_a_missing_topic_fails_to_start() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let missing: Topic<OrderEvent> = Topic::named(unique("proj.never.created"));
    // Refused while it is built, before its consumer joins the group.
    let built = Projector::builder(config, unique("g.rbmissing"), &missing, OrderTotals, store::open(&store_url).expect("store"))
        .version(2)
        .stop_at(StopAt::CaughtUp)
        .create_dead_letter_topic(false)
        .build()
        .await;
    match built.map(|_| ()) {
        Err(ProjectorError::Offsets(OffsetsError::UnknownTopic(t))) => assert_eq!(t, missing.name()),
        other => panic!("expected the unknown topic, got {other:?}"),
    }
}

/// Rows in `table`, 0 while it does not exist yet.
async fn rows_in(store_url: &str, table: &str) -> usize {
    let (store_url, sql) = (store_url.to_owned(), format!("SELECT customer_id FROM {table}"));
    tokio::task::spawn_blocking(move || {
        let store = store::open(&store_url).ok()?;
        let mut conn = store.connect().ok()?;
        let mut tx = conn.read().ok()?;
        tx.query(&sql, &[]).ok().map(|rows| rows.len())
    })
    .await
    .expect("read")
    .unwrap_or(0)
}

/// A time travel stopped by SIGTERM before its stop point says so and exits non-zero
/// (before, it printed "rebuilt: ..." and exited 0, so its partial version looked
/// finished), and a stop point that could never be reached is refused at once (before, a
/// partition the topic does not have was waited for until the process was killed).
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_time_travel_fails_and_an_unreachable_stop_point_is_refused() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.interrupt", 2).await);
    let publisher = publisher(&config);
    publish_orders(&publisher, &orders, 300, 0..200, 41).await;
    let group = unique("g.interrupt");
    let program = example_binary();
    let args = |until: &'static str| ["--topic", orders.name(), "--group", &group, "--store", &store_url, "--until-offsets", until].map(str::to_owned);

    // Partition 0's stop point lies far past its end: the time travel applies what there
    // is, then waits for the rest.
    let child = tokio::process::Command::new(&program)
        .args(args("0:1000000"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    herald_testkit::wait_until(DEADLINE, "the time travel applied events", || async { rows_in(&store_url, "customer_totals__v1").await > 0 }).await;
    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("stops after SIGTERM").expect("wait");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "an interrupted time travel fails: {stdout}\n{stderr}");
    assert!(stderr.contains("interrupted: version 1 holds only the first"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("rebuilt:"), "{stdout}");

    let out = tokio::time::timeout(std::time::Duration::from_secs(60), tokio::process::Command::new(&program).args(args("5:10")).env("RUST_LOG", "warn").output())
        .await
        .expect("refused at once")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("partition 5 is not one of the topic's (0 to 1)"), "{}: {stderr}", out.status);
}

/// A stop point past the end of the log is waited for: reaching the end of a partition
/// (here an empty one) does not reach it. Before, the end counted as the stop point
/// whatever its offset, so a time travel to offsets not yet written finished at once,
/// having applied nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_point_past_the_end_of_the_log_is_waited_for() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.future", 1).await);
    let projector = Projector::builder(config.clone(), unique("g.future"), &orders, OrderTotals, store::open(&store_url).expect("store"))
        .version(1)
        .stop_at(StopAt::Offsets([(0, 5)].into()))
        .build()
        .await
        .expect("builds");
    let status = projector.status();
    let running = tokio::spawn(projector.run(std::future::pending()));
    let end_known = || status.get().partitions.first().is_some_and(|p| p.end_offset == Some(0));
    herald_testkit::wait_until(DEADLINE, "the empty partition owned and its end known", || async { end_known() }).await;
    let events: Vec<herald_shop::OrderPlaced> = (0..8).map(|i| herald_shop::OrderPlaced::example(&format!("o-{i}"), "c-1", 100)).collect();
    for sent in publisher(&config).publish_all(&orders, &events).await {
        sent.expect("published");
    }
    let stopped = tokio::time::timeout(DEADLINE, running).await.expect("stops at its stop point").expect("task").expect("runs");
    assert_eq!(stopped, herald_projector::Stopped::StopPoint);
    let status = status.get();
    assert_eq!((status.applied_total, status.partitions.first().and_then(|p| p.position)), (5, Some(5)), "{status:?}");
}

/// Builds started together take versions of their own. Before, a version counted as
/// taken only once its build stored a position, so builds started together (two
/// operators, or a rebuild beside a time travel) took the same version: one set of view
/// tables, one consumer group.
#[tokio::test(flavor = "multi_thread")]
async fn builds_started_together_take_versions_of_their_own() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(store_url) = fresh_store(backend).await else { continue };
        let store = store::open(&store_url).expect("store");
        let builds: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::task::spawn_blocking(move || herald_projector::views::next_version(&*store, "order_totals"))
            })
            .collect();
        let mut taken = Vec::new();
        for build in builds {
            taken.push(build.await.expect("task").expect("a version"));
        }
        taken.sort_unstable();
        assert_eq!(taken, (1..=8).collect::<Vec<u32>>(), "{store_url}");
    }
}
