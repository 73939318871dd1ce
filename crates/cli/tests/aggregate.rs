//! `herald aggregate index` and `herald aggregate show` against a real broker and the
//! accounts aggregate (run in this test on the choreography engine): the state and the
//! stream in text and JSON, time travel by version and by time, and the bad-input exits.
//!
//! `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo test -p herald-cli --test aggregate`

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use herald_aggregate::{CommandClient, Decider};
use herald_bus::admin::{self, TopicSpec};
use herald_bus::{KafkaConfig, Topic};
use herald_choreography::engine::{Engine, EngineSettings};
use herald_projector::Store;
use herald_shop::accounts::{AccountCommand, Accounts, Deposit, OpenAccount, Withdraw};
use herald_services::{Directory, Settings};
use herald_testkit::wait_until;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

/// Runs `herald ARGS`: (exit code, stdout, stderr).
async fn herald(config: &KafkaConfig, args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herald")).args(["--bootstrap", config.bootstrap(), "--schemas", SCHEMAS]).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("herald finished in time")
    .expect("herald runs");
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// How many rows the stream index has.
fn indexed(store: &Arc<dyn Store>) -> i64 {
    let Ok(mut conn) = store.connect() else { return 0 };
    let Ok(mut tx) = conn.read() else { return 0 };
    match tx.as_tx().query_opt("SELECT COUNT(*) FROM aggregate_stream", &[]) {
        Ok(Some(row)) => row.int(0).unwrap_or(0),
        _ => 0,
    }
}

/// The balance from the events `show --json` printed, folded here from their type and
/// data (not by the aggregate's code).
fn balance_of(events: &[Value]) -> i64 {
    events
        .iter()
        .map(|e| match e["type"].as_str() {
            Some("shop.accounts.MoneyDeposited") => e["data"]["amount_cents"].as_i64().expect("amount"),
            Some("shop.accounts.MoneyWithdrawn") => -e["data"]["amount_cents"].as_i64().expect("amount"),
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_aggregate_show_prints_the_state_and_the_stream() {
    let config = herald_testkit::kafka().await;
    let prefix = format!("{}.", herald_testkit::unique("cli-aggregate"));
    let names: Vec<String> = ["shop.accounts.commands", "shop.accounts", "shop.accounts.replies"].iter().map(|t| format!("{prefix}{t}")).collect();
    let specs: Vec<TopicSpec> = names.iter().map(|t| TopicSpec::new(t.as_str()).partitions(3)).collect();
    admin::create_topics(&config, &specs).await.expect("topics");
    for spec in &specs {
        herald_testkit::wait_until(Duration::from_secs(30), "topic metadata", || async { admin::partition_count(&config, &spec.name).await.ok().flatten().is_some() }).await;
    }
    let mut settings = EngineSettings::new("cli-aggregate-test");
    settings.topic_prefix = prefix.clone();
    let engine = Engine::new(&config, Decider(Accounts), settings).expect("engine");
    let stop = CancellationToken::new();
    let running = tokio::spawn(engine.run(stop.clone().cancelled_owned()));
    let events_topic = names[1].as_str();

    // The index, as `herald aggregate index` (a process), into SQLite.
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).expect("folder");
    let url = format!("sqlite:{}", dir.join("index.db").display());
    let mut indexer = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--bootstrap", config.bootstrap(), "aggregate", "index", events_topic, "--store", &url, "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("herald aggregate index runs");
    let mut lines = tokio::io::BufReader::new(indexer.stdout.take().expect("stdout")).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            if let Some(addr) = line.trim().strip_prefix("http: ") {
                return format!("http://{addr}");
            }
        }
        panic!("herald aggregate index exited before printing its address")
    })
    .await
    .expect("the index printed its address in time");
    // It registers in the registry of its topic's prefix, with its address and group.
    let directory = Directory::start(&config, &Settings::default().topic(format!("{prefix}herald.services"))).await.expect("directory");
    wait_until(Duration::from_secs(60), "the index registered", || async { !directory.live("stream-index").is_empty() }).await;
    let me = directory.live("stream-index").remove(0);
    assert_eq!((me.address.as_str(), me.consumer_groups.clone()), (address.as_str(), vec![format!("herald-stream-index-{events_topic}")]));

    let client = CommandClient::new(&config, Topic::<AccountCommand>::named(&names[0]), names[2].clone()).await.expect("client").with_timeout(Duration::from_secs(60));
    for (i, account) in ["a-1", "a-2", "a-3"].iter().enumerate() {
        let reply = client.send(OpenAccount { account_id: (*account).into(), owner: format!("c-{i}") }).await.expect("reply");
        assert!(reply.is_accepted(), "{reply:?}");
    }
    for (amount, withdraw) in [(500, false), (200, true), (50, false), (25, true)] {
        let reply = if withdraw {
            client.send(Withdraw { account_id: "a-1".into(), amount_cents: amount }).await
        } else {
            client.send(Deposit { account_id: "a-1".into(), amount_cents: amount }).await
        };
        assert!(reply.expect("reply").is_accepted());
        assert!(client.send(Deposit { account_id: "a-2".into(), amount_cents: 7 }).await.expect("reply").is_accepted());
    }
    let store = herald_projector::store::open(&url).expect("store");
    herald_testkit::wait_until(Duration::from_secs(60), "the index has the 11 events", || {
        let store = store.clone();
        async move { indexed(&store) == 11 }
    })
    .await;

    // JSON: the state folded by the accounts' evolve, and the stream, which a fold of its
    // own data agrees with.
    let show = |extra: &[&str]| {
        let mut args = vec!["aggregate", "show", events_topic, "a-1", "--store", url.as_str(), "--json"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let config = config.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, out, err) = herald(&config, &args).await;
            assert_eq!(code, Some(0), "stdout {out} stderr {err}");
            serde_json::from_str::<Value>(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
        }
    };
    let latest = show(&[]).await;
    let events = latest["events"].as_array().expect("events").clone();
    assert_eq!(events.iter().map(|e| e["version"].as_i64().expect("version")).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(events.iter().map(|e| e["type"].as_str().expect("type").rsplit('.').next().unwrap_or_default().to_owned()).collect::<Vec<_>>(), ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "MoneyDeposited", "MoneyWithdrawn"]);
    assert_eq!(latest["version"].as_i64(), Some(5));
    assert_eq!(latest["state"], serde_json::json!({"open": true, "owner": "c-0", "balance_cents": 325}));
    assert_eq!(latest["state"]["balance_cents"].as_i64(), Some(balance_of(&events)));
    assert_eq!(events[0]["data"], serde_json::json!({"account_id": "a-1", "owner": "c-0"}));

    // Time travel.
    let at2 = show(&["--at-version", "2"]).await;
    assert_eq!((at2["version"].as_i64(), at2["state"]["balance_cents"].as_i64(), at2["events"].as_array().map(Vec::len)), (Some(2), Some(500), Some(2)));
    let third = events[2]["time"].as_str().expect("time");
    let at_time = show(&["--at-time", third]).await;
    assert_eq!((at_time["version"].as_i64(), at_time["state"]["balance_cents"].as_i64()), (Some(3), Some(300)));

    // Text: the state line and one line per event.
    let (code, text, err) = herald(&config, &["aggregate", "show", events_topic, "a-1", "--store", &url]).await;
    assert_eq!(code, Some(0), "{err}");
    let state_line = text.lines().find_map(|l| l.strip_prefix("state (Accounts evolve): ")).unwrap_or_else(|| panic!("no state line: {text}"));
    assert_eq!(serde_json::from_str::<Value>(state_line).ok(), Some(latest["state"].clone()), "{text}");
    assert!(text.contains("at version 5"), "{text}");
    for e in &events {
        let line = text.lines().find(|l| l.contains(e["event_id"].as_str().expect("id"))).unwrap_or_else(|| panic!("no line for {e}: {text}"));
        assert!(line.contains(e["type"].as_str().expect("type")) && line.contains(&e["data"].to_string()), "{line}");
    }

    // Bad input: exit 2; an index that is not there is not made (an empty file).
    let nowhere = dir.join("no-index.db");
    let nowhere_url = format!("sqlite:{}", nowhere.display());
    let bad: [&[&str]; 6] = [
        &["aggregate", "show", events_topic, "a-1", "--store", &nowhere_url],
        &["aggregate", "show", events_topic, "nobody", "--store", &url],
        &["aggregate", "show", events_topic, "a-1", "--store", &url, "--at-version", "9"],
        &["aggregate", "show", events_topic, "a-1", "--store", &url, "--at-time", "yesterday"],
        &["aggregate", "show", &names[2], "a-1", "--store", &url],
        &["aggregate", "show", &format!("{prefix}missing"), "a-1", "--store", &url],
    ];
    for args in bad {
        let (code, out, err) = herald(&config, args).await;
        assert_eq!(code, Some(2), "{args:?}: stdout {out} stderr {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    assert!(!nowhere.exists(), "show made {}", nowhere.display());

    // SIGTERM: it stops in order and deregisters (a tombstone, long before the TTL).
    let pid = indexer.id().expect("running").to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill").success());
    let exit = tokio::time::timeout(Duration::from_secs(60), indexer.wait()).await.expect("stopped in time").expect("exit status");
    assert!(exit.success(), "{exit:?}");
    wait_until(Duration::from_secs(10), "the index deregistered", || async { directory.live("stream-index").is_empty() }).await;
    directory.shutdown().await;
    stop.cancel();
    running.await.expect("engine task").expect("engine stopped in order");
    let _ = std::fs::remove_dir_all(&dir);
}
