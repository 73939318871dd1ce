//! `herald command` against a real broker and the accounts aggregate (run in this test on
//! the choreography engine): accepted (exit 0), rejected (1), conflict (1), a command sent
//! again with its `--id`, dead-lettered (1), bad input (2), and no reply in time (3).
//!
//! `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo test -p herald-cli --test command`

use std::time::Duration;

use herald_aggregate::Decider;
use herald_bus::admin::{self, TopicSpec};
use herald_bus::KafkaConfig;
use herald_choreography::engine::{Engine, EngineSettings};
use herald_shop::accounts::Accounts;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

/// Runs `herald command TOPIC ARGS`: (exit code, stdout, stderr).
async fn command(config: &KafkaConfig, topic: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herald")).args(["--bootstrap", config.bootstrap(), "--schemas", SCHEMAS, "command", topic]).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("herald command finished in time")
    .expect("herald runs");
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn reply(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not a JSON reply ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_command_prints_the_reply_and_says_the_outcome_in_its_exit_code() {
    let config = herald_testkit::kafka().await;
    let prefix = format!("{}.", herald_testkit::unique("cli-command"));
    let names: Vec<String> = ["shop.accounts.commands", "shop.accounts", "shop.accounts.replies"].iter().map(|t| format!("{prefix}{t}")).collect();
    let specs: Vec<TopicSpec> = names.iter().map(|t| TopicSpec::new(t.as_str()).partitions(3)).collect();
    admin::create_topics(&config, &specs).await.expect("topics");
    for spec in &specs {
        herald_testkit::wait_until(Duration::from_secs(30), "topic metadata", || async { admin::partition_count(&config, &spec.name).await.ok().flatten().is_some() }).await;
    }
    let mut settings = EngineSettings::new("cli-test");
    settings.topic_prefix = prefix.clone();
    let engine = Engine::new(&config, Decider(Accounts), settings).expect("engine");
    let stop = CancellationToken::new();
    let until = stop.clone();
    let running = tokio::spawn(engine.run(async move { until.cancelled().await }));
    let topic = names[0].as_str();

    // Accepted: exit 0, the reply on stdout (the first command also waits for the engine to start).
    let (code, out, err) = command(&config, topic, &["--type", "shop.accounts.OpenAccount", "--key", "a-1", "--data", r#"{"account_id":"a-1","owner":"c-1"}"#, "--timeout", "60s"]).await;
    assert_eq!(code, Some(0), "stdout {out} stderr {err}");
    let opened = reply(&out);
    assert_eq!((opened["outcome"].as_str(), opened["version"].as_i64(), opened["aggregate_id"].as_str()), (Some("accepted"), Some(1), Some("a-1")));
    assert_eq!(opened["event_ids"].as_array().map(Vec::len), Some(1));

    // Rejected by the domain: exit 1, the reason in the reply.
    let (code, out, _) = command(&config, topic, &["--type", "shop.accounts.Withdraw", "--key", "a-1", "--data", r#"{"account_id":"a-1","amount_cents":5}"#, "--timeout", "30s"]).await;
    assert_eq!(code, Some(1));
    assert_eq!(reply(&out)["reason"].as_str(), Some("insufficient-funds"));

    // --expect-version: another version is a conflict (exit 1); the right one is accepted.
    let deposit = r#"{"account_id":"a-1","amount_cents":500}"#;
    let (code, out, _) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--expect-version", "5", "--timeout", "30s"]).await;
    assert_eq!((code, reply(&out)["reason"].as_str().map(str::to_owned)), (Some(1), Some("conflict".to_owned())));
    let (code, out, _) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--expect-version", "1", "--timeout", "30s"]).await;
    assert_eq!((code, reply(&out)["version"].as_i64()), (Some(0), Some(2)));

    // --id: the same command sent again with its id gets the reply it got, decided once.
    let id = uuid::Uuid::now_v7().to_string();
    let (code, first, _) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--id", &id, "--timeout", "30s"]).await;
    let (again_code, again, _) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--id", &id, "--timeout", "30s"]).await;
    assert_eq!((code, again_code), (Some(0), Some(0)));
    let (first, again) = (reply(&first), reply(&again));
    assert_eq!((first["command_id"].as_str(), first["version"].as_i64()), (Some(id.as_str()), Some(3)));
    assert_eq!(again, first, "the same reply, the command decided once");
    let (_, next, _) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--timeout", "30s"]).await;
    assert_eq!(reply(&next)["version"].as_i64(), Some(4), "the second send of the id changed nothing");

    // A key that is not the body's account: the engine dead-letters the command, which is
    // never decided: exit 1 (not 3, "unknown"), with the dead letter's reason.
    let (code, out, err) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-2", "--data", deposit, "--timeout", "3s"]).await;
    assert_eq!(code, Some(1), "stdout {out} stderr {err}");
    let letter = reply(&out);
    assert_eq!(letter["outcome"].as_str(), Some("dead-lettered"), "{letter}");
    assert!(letter["reason"].as_str().is_some_and(|r| r.contains("a-2")), "{letter}");
    assert_eq!(letter["dead_letter"]["topic"].as_str(), Some(format!("{topic}.dlq").as_str()));

    // Bad input: exit 2, nothing sent.
    let (code, _, err) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", r#"{"account_id":"a-1"}"#]).await;
    assert_eq!(code, Some(2), "{err}");
    let (code, _, _) = command(&config, topic, &["--type", "shop.accounts.Nope", "--key", "a-1", "--data", "{}"]).await;
    assert_eq!(code, Some(2));
    // An event type, not one of the command topic's (schemas/manifest.toml): the aggregate
    // would dead-letter it, so it is not sent.
    let (code, _, err) = command(&config, topic, &["--type", "shop.accounts.AccountOpened", "--key", "a-1", "--data", r#"{"account_id":"a-1","owner":"c-1"}"#]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a type of"), "{err}");
    let (code, _, err) = command(&config, topic, &["--type", "shop.accounts.OpenAccount", "--key", "", "--data", r#"{"account_id":"","owner":"c-1"}"#]).await;
    assert_eq!(code, Some(2), "an empty aggregate id: {err}");
    let (code, _, err) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--expect-version=-1"]).await;
    assert_eq!(code, Some(2), "a negative version: {err}");
    let (code, _, err) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--timeout", "0s"]).await;
    assert_eq!(code, Some(2), "no time to wait for the reply: {err}");
    // A reply topic that is one of the aggregate's own (no reply would ever come).
    for own in [topic, names[1].as_str()] {
        let (code, _, err) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--reply-topic", own]).await;
        assert_eq!(code, Some(2), "--reply-topic {own}: {err}");
    }

    // No aggregate running: exit 3, and stderr names the command id to look it up by.
    stop.cancel();
    running.await.expect("engine task").expect("engine stopped in order");
    let (code, out, err) = command(&config, topic, &["--type", "shop.accounts.Deposit", "--key", "a-1", "--data", deposit, "--timeout", "1s"]).await;
    assert_eq!(code, Some(3), "stdout {out} stderr {err}");
    assert!(out.trim().is_empty());
    let unknown: Value = err.lines().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| panic!("no JSON on stderr: {err}"));
    assert_eq!(unknown["outcome"].as_str(), Some("unknown"));
    let id: uuid::Uuid = unknown["command_id"].as_str().and_then(|s| s.parse().ok()).expect("a command id");
    assert!(err.contains(&id.to_string()) && err.contains("outcome is unknown"), "{err}");
    // Looking the reply up reads to the ends of the reply topic's partitions: normal, not
    // an error (before, six `ERROR ... PartitionEOF` lines came before the answer).
    assert!(!err.contains("PartitionEOF"), "{err}");
}
