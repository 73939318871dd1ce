//! Fault tests: the relay killed at every step of a batch (a real process, aborted at the
//! step by its crash hook, and killed with SIGKILL at random moments), and the PostgreSQL
//! server killed (`kill -9` of the postmaster) and restarted while services commit rows and
//! the relay runs. Afterwards every committed row is in the topic (read_committed), first
//! seen in commit order per aggregate, and no row went out under two ids; duplicates
//! (the same id again) are counted.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use herald_bus::Topic;
use herald_outbox::relay::{Relay, RelayOptions};
use herald_services::{Directory, Settings};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// A relay process, registered in the test's own `registry` topic. With `crash_at`, the
/// relay built with crash points (`examples/relay_crash.rs`): the installed binary has none.
fn relay_process(url: &str, table: &str, buckets: u32, instance: &str, registry: &str, crash_at: Option<&str>) -> Child {
    let program = match crash_at {
        Some(_) => herald_testkit::example_binary_with("herald-outbox", "relay_crash", &["crash-points"]),
        None => env!("CARGO_BIN_EXE_herald-outbox-relay").into(),
    };
    let mut command = Command::new(program);
    command
        .args(["--postgres", url, "--table", table, "--buckets", &buckets.to_string()])
        .args(["--bootstrap", &std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())])
        .args(["--http", "127.0.0.1:0", "--instance", instance, "--batch-size", "20", "--registry-topic", registry, "--registry-heartbeat", "500ms"])
        .args(["--poll-interval", "200ms", "--delivery-timeout", "3s", "--takeover-delay", "4s", "--rebalance-interval", "300ms"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(crash) = crash_at {
        command.env("HERALD_OUTBOX_CRASH_AT", crash);
    }
    command.spawn().expect("start herald-outbox-relay")
}

/// librdkafka properties come from `HERALD_RDKAFKA_*` variables (SASL settings, say), under
/// `-X`: one that librdkafka does not know stops the relay at start, named. The relay used
/// to ignore them all.
#[test]
fn kafka_settings_come_from_herald_rdkafka_variables() {
    let mut relay = std::process::Command::new(env!("CARGO_BIN_EXE_herald-outbox-relay"));
    relay.args(["--postgres", "postgres://herald@127.0.0.1:1/herald", "--bootstrap", "127.0.0.1:1", "--no-register"]);
    herald_testkit::assert_reads_rdkafka_env(relay);
}

/// A relay started before PostgreSQL answers serves `/health` at once, unhealthy, saying
/// why (the cause, not only "error connecting to server").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_waiting_for_postgres_answers_health_and_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Nothing listens on port 1 here: every connection is refused.
    let mut relay = Command::new(env!("CARGO_BIN_EXE_herald-outbox-relay"))
        .args(["--postgres", "postgres://herald@127.0.0.1:1/herald", "--http", &format!("127.0.0.1:{port}"), "--no-register"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start herald-outbox-relay");
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let answer = loop {
        if let Ok(response) = http.get(&url).timeout(Duration::from_secs(2)).send().await {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            if body.contains("last_error") {
                break Some((status, body));
            }
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, body) = answer.expect("/health answered with a last_error within 15 s");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("creating the outbox schema") && body.contains("refused"), "{body}");
    assert!(relay.try_wait().unwrap().is_none(), "still waiting for PostgreSQL");
}

/// Waits until `table` holds no row, within `within`.
async fn emptied(client: &tokio_postgres::Client, table: &str, within: Duration) {
    herald_testkit::wait_until(within, "the relay emptied the outbox", || async move { pending(client, table).await == 0 }).await;
}

/// Stops a relay process with SIGTERM and checks it stopped in order.
async fn stop_in_order(relay: &mut Child) {
    let pid = relay.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), relay.wait()).await.unwrap().unwrap();
    assert!(status.success(), "orderly stop: {status:?}");
}

/// The installed relay has no crash points: `HERALD_OUTBOX_CRASH_AT` means nothing to it
/// (only the fault tests' build, `examples/relay_crash.rs`, reads it). Before, the
/// production binary read it and aborted at the first batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_relay_has_no_crash_points() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.nocrash", 1).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let url = shared_postgres();
    let config = herald_outbox::config(&url).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_nocrash", 2).await;
    let table = outbox.table().name().to_owned();
    for _ in 0..3 {
        step(&mut client, &outbox, &topic, "a").await.unwrap();
    }
    let mut relay = Command::new(env!("CARGO_BIN_EXE_herald-outbox-relay"))
        .args(["--postgres", &url, "--table", &table, "--buckets", "2", "--http", "127.0.0.1:0", "--no-register", "--poll-interval", "200ms"])
        .args(["--bootstrap", &std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())])
        .env("HERALD_OUTBOX_CRASH_AT", "read:1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start herald-outbox-relay");
    emptied(&client, &table, Duration::from_secs(60)).await;
    assert!(relay.try_wait().unwrap().is_none(), "the relay is still running");
    stop_in_order(&mut relay).await;
    assert_eq!(read_topic(&kafka, &topic_name).len(), 3);
    drop_outbox(&client, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_killed_at_every_step_loses_nothing_and_keeps_the_ids() {
    use std::os::unix::process::ExitStatusExt;
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.crash", 4).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let url = shared_postgres();
    let config = herald_outbox::config(&url).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_crash", 8).await;
    let table = outbox.table().name().to_owned();
    let stop = CancellationToken::new();
    let writers = spawn_writers(&url, &outbox, &topic, 3, 12, stop.clone());
    let registry = herald_testkit::unique("t.services");
    // The relays renew every 500 ms; this directory expires them after 1.5 s without one.
    let directory = Directory::start(&kafka, &Settings::default().topic(&registry).ttl(Duration::from_millis(1500))).await.unwrap();

    // Each relay process crashes at its step, on its third batch (so the first two went
    // through); the next one starts after it died.
    for (i, step) in ["read", "produced", "acknowledged", "marked"].into_iter().enumerate() {
        let mut relay = relay_process(&url, &table, 8, &format!("crash-{i}"), &registry, Some(&format!("{step}:3")));
        let status = tokio::time::timeout(Duration::from_secs(60), relay.wait()).await.unwrap_or_else(|_| panic!("the relay never reached {step}:3")).unwrap();
        assert_eq!(status.signal(), Some(6), "aborted at {step}: {status:?}");
    }
    // And killed with SIGKILL at moments nobody chose.
    for i in 0..3 {
        let mut relay = relay_process(&url, &table, 8, &format!("killed-{i}"), &registry, None);
        let pause = Duration::from_millis(4000 + rand::random::<u64>() % 1500);
        tokio::time::sleep(pause).await; // the takeover delay (4 s) and then some relaying
        relay.start_kill().unwrap();
        relay.wait().await.unwrap();
    }
    let mut last = relay_process(&url, &table, 8, "last", &registry, None);
    stop.cancel();
    let committed: u64 = futures::future::join_all(writers).await.into_iter().map(|r| r.unwrap()).sum();
    emptied(&client, &table, Duration::from_secs(180)).await;
    // The running relay is registered under its name; the killed ones have expired.
    herald_testkit::wait_until(Duration::from_secs(30), "only the last relay is registered", || async {
        directory.live("outbox-relay").iter().map(|i| i.instance.as_str()).collect::<Vec<_>>() == ["last"]
    })
    .await;
    // Its /metrics counts what it relayed (before, the relay took its metric handles
    // before the recorder was installed, and none of its own series showed).
    let address = directory.live("outbox-relay").iter().find(|i| i.instance == "last").map(|i| i.address.clone()).unwrap();
    let metrics = reqwest::get(format!("{address}/metrics")).await.unwrap().text().await.unwrap();
    let relayed: f64 = metrics.lines().filter(|l| l.starts_with("herald_outbox_relayed_total")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
    assert!(relayed > 0.0, "herald_outbox_relayed_total on /metrics:\n{metrics}");
    assert!(metrics.contains("herald_outbox_owned_buckets"), "{metrics}");
    stop_in_order(&mut last).await;
    // Deregistered by its tombstone: gone from the entries, not merely expired.
    herald_testkit::wait_until(Duration::from_secs(10), "the last relay deregistered", || async { !directory.entries().iter().any(|e| e.instance.instance == "last") }).await;
    directory.shutdown().await;

    let seen = read_topic(&kafka, &topic_name);
    let state = state(&client, &table).await;
    let verdict = check(&seen, &state);
    let total: i64 = state.values().sum();
    assert_eq!(total as u64, committed, "the state has every committed step (no ambiguous commits here)");
    assert_eq!(verdict.records - verdict.duplicates, committed as usize, "{verdict:?}");
    assert!(verdict.duplicates > 0, "the crash after the acknowledgement must have resent rows (same ids): {verdict:?}");
    eprintln!("relay crashes: {committed} committed, {} records, {} duplicates (same id)", verdict.records, verdict.duplicates);
    drop_outbox(&client, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_and_restarted_while_services_commit_and_the_relay_runs() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.pgkill", 4).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let pg = herald_testkit::PrivatePostgres::new("outbox-pg");
    pg.start().await;
    let url = pg.url();
    let config = herald_outbox::config(&url).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_pgkill", 8).await;
    let table = outbox.table().clone();
    drop(client);

    let options = RelayOptions {
        instance: "survivor".into(),
        batch_size: 25,
        poll_interval: Duration::from_millis(300),
        rebalance_interval: Duration::from_millis(300),
        max_backoff: Duration::from_millis(300),
        delivery_timeout: Duration::from_secs(5),
        takeover_delay: Duration::from_secs(6),
        ..RelayOptions::default()
    };
    let relay = Relay::new(config.clone(), table.clone(), &kafka, options).unwrap();
    let health = relay.health();
    let stop_relay = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(stop_relay.clone().cancelled_owned()));
    let stop = CancellationToken::new();
    let writers = spawn_writers(&url, &outbox, &topic, 4, 12, stop.clone());

    for round in 1..=3u64 {
        let target = health.relayed() + 150;
        herald_testkit::wait_until(Duration::from_secs(60), &format!("round {round}: 150 more rows relayed"), || {
            let health = health.clone();
            async move { health.relayed() >= target }
        })
        .await;
        pg.kill().await;
        pg.start().await;
    }
    let target = health.relayed() + 150;
    herald_testkit::wait_until(Duration::from_secs(60), "the relay goes on after the last restart", || {
        let health = health.clone();
        async move { health.relayed() >= target }
    })
    .await;
    stop.cancel();
    futures::future::join_all(writers).await.into_iter().for_each(|r| {
        r.unwrap();
    });
    let client = herald_outbox::connect(&config).await.unwrap();
    herald_testkit::wait_until(Duration::from_secs(60), "the outbox is empty", || {
        let client = &client;
        let name = table.name().to_owned();
        async move { pending(client, &name).await == 0 }
    })
    .await;
    stop_relay.cancel();
    relay_task.await.unwrap().unwrap();

    let seen = read_topic(&kafka, &topic_name);
    // The committed state decides (a commit cut off by the crash may or may not have
    // happened; the state says which, and its event must be there exactly when it did).
    let state = state(&client, table.name()).await;
    let verdict = check(&seen, &state);
    let total: i64 = state.values().sum();
    assert_eq!((verdict.records - verdict.duplicates) as i64, total, "{verdict:?}");
    eprintln!("postgres kills: {total} committed, {} records, {} duplicates (same id)", verdict.records, verdict.duplicates);
}
