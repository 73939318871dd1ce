//! `herald saga check|diagram` (no broker needed).

use std::process::Command;

fn herald(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_herald")).args(args).output().expect("herald runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn saga_check_passes_the_reference_saga() {
    let (code, out, err) = herald(&["saga", "check"]);
    assert_eq!((code, out.as_str()), (0, "saga check: ok\n"), "{err}");
}

#[test]
fn saga_diagram_prints_mermaid() {
    let (code, out, err) = herald(&["saga", "diagram"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("flowchart LR\n"), "{out}");
    assert!(out.contains("t_shop_inventory_commands -- \"repartition by sku\" --> p_inventory_stock"), "{out}");
}

/// `herald saga track` on the shop's topics (unique names), then `list` and `show` from its
/// store and its HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_track_list_and_show_against_the_broker() {
    use std::time::Duration;
    use herald_bus::{Publisher, PublisherOptions};
    use herald_tracker::script::{Script, Step::*};
    use herald_tracker::TrackedSaga as _;
    use tokio::io::AsyncBufReadExt as _;

    let config = herald_testkit::kafka().await;
    let prefix = format!("{}.", herald_testkit::unique("t.cli.saga"));
    let specs: Vec<_> = herald_tracker::shop::Shop::topics().iter().map(|t| herald_bus::admin::TopicSpec::new(format!("{prefix}{t}")).partitions(2)).collect();
    herald_bus::admin::create_topics(&config, &specs).await.expect("topics");
    let dir = std::env::temp_dir().join(herald_testkit::unique("herald-cli-saga"));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = format!("sqlite:{}", dir.join("sagas.db").display());
    let group = herald_testkit::unique("g.cli.saga");

    let mut track = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--bootstrap", config.bootstrap(), "saga", "track", "--store", &store, "--group", &group, "--topic-prefix", &prefix, "--stuck-after", "60s", "--http", "127.0.0.1:0"])
        .env_remove("HERALD_STORE_URL")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("herald saga track starts");
    let mut lines = tokio::io::BufReader::new(track.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.expect("in time").expect("read").expect("a line");
    let addr = first.strip_prefix("http: ").unwrap_or_else(|| panic!("unexpected first line {first:?}")).to_owned();

    let publisher = Publisher::new(&config, PublisherOptions::new("/test/cli")).expect("publisher");
    let script = Script::new(&publisher, &prefix);
    let now = chrono::Utc::now();
    let ms = chrono::Duration::milliseconds(10);
    script.saga("c-done", &[Placed, Reserved, Charged, Confirmed], now, ms).await.expect("published");
    let undone = script.saga("c-undone", &[Placed, Reserved, Declined, Cancelled, Released], now, ms).await.expect("published");
    script.saga("c-stuck", &[Placed], now - chrono::Duration::hours(2), ms).await.expect("published");
    script.saga("c-stranded", &[Placed, Reserved, Charged, Cancelled, Refunded], now - chrono::Duration::hours(2), ms).await.expect("published");

    let list = |extra: &'static [&'static str]| {
        let store = store.clone();
        move || {
            let mut args = vec!["saga", "list", "--store", &store, "--json"];
            args.extend_from_slice(extra);
            let (code, out, err) = herald(&args);
            assert_eq!(code, 0, "{err}");
            serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("json")
        }
    };
    let all = list(&[]);
    herald_testkit::wait_until(Duration::from_secs(60), "the tracker recorded all 15 events", || {
        let events: i64 = all().iter().map(|s| s["events"].as_i64().unwrap_or(0)).sum();
        async move { events == 15 }
    })
    .await;
    let states: std::collections::BTreeMap<String, String> = all().iter().map(|s| (s["subject"].as_str().unwrap_or("").to_owned(), s["state"].as_str().unwrap_or("").to_owned())).collect();
    let expected: std::collections::BTreeMap<String, String> =
        [("c-done", "completed"), ("c-undone", "compensated"), ("c-stuck", "stuck"), ("c-stranded", "failed")].into_iter().map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
    assert_eq!(states, expected);
    let mut stuck: Vec<String> = list(&["--stuck"])().iter().map(|s| s["subject"].as_str().unwrap_or("").to_owned()).collect();
    stuck.sort();
    assert_eq!(stuck, ["c-stranded", "c-stuck"]);
    assert_eq!(list(&["--older-than", "1h"])().len(), 2);
    assert_eq!(list(&["--state", "completed"])().len(), 1);

    // The table and the timeline, as text.
    let (code, out, err) = herald(&["saga", "list", "--store", &store, "--stuck"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.contains("c-stranded") && l.contains("failed (stuck)") && l.contains("never saw shop.inventory.StockReleased")), "{out}");
    let id = undone[0].id.to_string();
    let (code, out, err) = herald(&["saga", "show", &id, "--store", &store]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("saga {id}  subject c-undone\nstate: compensated, outcome shop.orders.OrderCancelled\n5 events")), "{out}");
    let released = &undone[4];
    assert!(out.lines().any(|l| l.contains("shop.inventory.StockReleased") && l.contains(&format!("{prefix}shop.inventory/{}@{}", released.partition, released.offset)) && l.contains(&undone[3].id.to_string())), "{out}");
    // By order id, from the tracker's HTTP.
    let (code, out, err) = herald(&["saga", "show", "c-undone", "--url", &format!("http://{addr}"), "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((shown["id"].as_str(), shown["state"].as_str(), shown["timeline"].as_array().map(Vec::len)), (Some(id.as_str()), Some("compensated"), Some(5)));
    let (code, out, _) = herald(&["saga", "list", "--url", &format!("http://{addr}"), "--stuck", "--json"]);
    assert_eq!((code, serde_json::from_str::<Vec<serde_json::Value>>(&out).map(|v| v.len()).ok()), (0, Some(2)));
    let (code, _, err) = herald(&["saga", "show", "nope", "--store", &store]);
    assert_eq!(code, 2, "{err}");
    // Its /metrics has the tracker's own series and its projector's.
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    for series in ["herald_saga_sagas{", "herald_projector_events_total"] {
        assert!(metrics.contains(series), "{series} on /metrics:\n{metrics}");
    }

    // SIGTERM stops it cleanly.
    let pid = track.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = tokio::time::timeout(Duration::from_secs(60), track.wait()).await.expect("stops in time").expect("status");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `herald saga track` killed (`kill -9`) and started again reads on once its
/// predecessor's session expired (`--session-timeout 6s` here), not after librdkafka's
/// default of 45 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_track_killed_and_restarted_reads_on_after_its_session_timeout() {
    use std::time::{Duration, Instant};
    use herald_bus::{Publisher, PublisherOptions};
    use herald_tracker::script::{Script, Step::*};
    use herald_tracker::TrackedSaga as _;
    use tokio::io::AsyncBufReadExt as _;

    let config = herald_testkit::kafka().await;
    let prefix = format!("{}.", herald_testkit::unique("t.cli.saga.restart"));
    let specs: Vec<_> = herald_tracker::shop::Shop::topics().iter().map(|t| herald_bus::admin::TopicSpec::new(format!("{prefix}{t}")).partitions(2)).collect();
    herald_bus::admin::create_topics(&config, &specs).await.expect("topics");
    let dir = std::env::temp_dir().join(herald_testkit::unique("herald-cli-saga-restart"));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = format!("sqlite:{}", dir.join("sagas.db").display());
    let group = herald_testkit::unique("g.cli.saga.restart");
    let librdkafka_session_timeout = Duration::from_secs(45);
    let start = || {
        let mut track = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["--bootstrap", config.bootstrap(), "saga", "track", "--store", &store, "--group", &group, "--topic-prefix", &prefix, "--http", "127.0.0.1:0"])
            .args(["--session-timeout", "6s", "--no-register"])
            .env_remove("HERALD_STORE_URL")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("herald saga track starts");
        let lines = tokio::io::BufReader::new(track.stdout.take().expect("stdout")).lines();
        (track, lines)
    };
    let events = || {
        let (code, out, err) = herald(&["saga", "list", "--store", &store, "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("json").iter().map(|s| s["events"].as_i64().unwrap_or(0)).sum::<i64>()
    };
    let publisher = Publisher::new(&config, PublisherOptions::new("/test/cli")).expect("publisher");
    let script = Script::new(&publisher, &prefix);
    let ms = chrono::Duration::milliseconds(10);

    let (mut track, _lines) = start();
    script.saga("before", &[Placed, Reserved, Charged, Confirmed], chrono::Utc::now(), ms).await.expect("published");
    herald_testkit::wait_until(Duration::from_secs(60), "the tracker recorded the first saga", || {
        let n = events();
        async move { n == 4 }
    })
    .await;
    track.kill().await.expect("kill -9");

    let (mut track, _lines) = start();
    let restarted = Instant::now();
    for i in 0..8 {
        script.saga(&format!("after-{i}"), &[Placed, Reserved, Charged, Confirmed], chrono::Utc::now(), ms).await.expect("published");
    }
    herald_testkit::wait_until(librdkafka_session_timeout / 2, "the restarted tracker recorded every later saga, within half librdkafka's default session timeout", || {
        let n = events();
        async move { n == 4 + 8 * 4 }
    })
    .await;
    eprintln!("the restarted tracker read on after {:?}", restarted.elapsed());
    track.kill().await.expect("kill -9");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_zero_or_overflowing_registry_heartbeat_is_a_usage_error() {
    for bad in ["0ms", "99999999999999999d"] {
        let (code, _, err) = herald(&["saga", "track", "--registry-heartbeat", bad]);
        assert_eq!(code, 2, "--registry-heartbeat {bad}: {err}");
        assert!(err.contains("invalid registry settings") && err.contains(bad), "{err}");
    }
}
