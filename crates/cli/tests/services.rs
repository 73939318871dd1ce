//! `herald services` against a real broker, on a registry topic of its own.

use std::time::Duration;

use herald_services::{Instance, Registration, Settings};
use serde_json::Value;

async fn herald(bootstrap: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald")).arg("--bootstrap").arg(bootstrap).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("herald finished in time").expect("herald ran");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn services_lists_live_and_expired_instances_and_not_deregistered_ones() {
    let config = herald_testkit::kafka().await;
    let topic = herald_testkit::unique("t.services");
    // A long heartbeat interval: no heartbeat happens during the test, so what the
    // directory sees is exactly the registered records.
    let settings = Settings::default().topic(&topic).heartbeat(Duration::from_secs(600));
    let live = Registration::register(&config, &settings, Instance::new("orders", "o-1", "http://127.0.0.1:8001", "0.1.0").expect("valid")).await.expect("register");
    let mut old = Instance::new("orders", "o-2", "http://127.0.0.1:8002", "0.1.0").expect("valid");
    old.heartbeat_at_ms -= 60_000; // its last heartbeat was a minute ago: it crashed
    drop(Registration::register(&config, &settings, old).await.expect("register"));
    let mut forgotten = Instance::new("orders", "o-3", "http://127.0.0.1:8004", "0.1.0").expect("valid");
    forgotten.heartbeat_at_ms -= 3 * 3600 * 1000; // crashed hours ago, past the TTL and FORGET_AFTER
    drop(Registration::register(&config, &settings, forgotten).await.expect("register"));
    let gone = Registration::register(&config, &settings, Instance::new("payments", "p-1", "http://127.0.0.1:8003", "0.1.0").expect("valid")).await.expect("register");
    gone.shutdown().await.expect("deregister");

    let (code, stdout, stderr) = herald(config.bootstrap(), &["services", "--json", "--topic", &topic, "--ttl-ms", "30000"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let services: Value = serde_json::from_str(stdout.trim()).expect("JSON");
    let services = services.as_array().expect("an array of services");
    assert_eq!(services.len(), 1, "the deregistered service is not listed: {stdout}");
    assert_eq!(services[0]["service"], "orders");
    assert_eq!(services[0]["live"], 1);
    let instances: Vec<(&str, &str)> =
        services[0]["instances"].as_array().expect("instances").iter().map(|i| (i["instance"].as_str().unwrap_or(""), i["health"].as_str().unwrap_or(""))).collect();
    assert_eq!(instances, [("o-1", "live"), ("o-2", "expired")]);
    assert!(services[0]["instances"][1]["heartbeat_age_ms"].as_i64().is_some_and(|a| a >= 60_000));

    let (code, stdout, stderr) = herald(config.bootstrap(), &["services", "--topic", &topic, "--ttl-ms", "30000"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("orders  (1 of 2 live)"), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("o-2") && l.contains("EXPIRED") && l.contains("heartbeat 1m")), "{stdout}");
    live.shutdown().await.expect("deregister");
}

#[tokio::test]
async fn services_shows_the_consumer_groups_of_instances_with_their_lag() {
    use herald_bus::admin::{create_topics, TopicSpec};
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};

    let config = herald_testkit::kafka().await;
    let registry = herald_testkit::unique("t.services");
    let topic = herald_testkit::unique("t.lag");
    let group = herald_testkit::unique("g.lag");
    create_topics(&config, &[TopicSpec::new(&topic).partitions(1)]).await.expect("topic");
    let producer: FutureProducer = config.client_config(&[("acks", "all")]).create().expect("producer");
    let written = chrono::Utc::now().timestamp_millis() - 30_000;
    for i in 0..8 {
        producer.send(FutureRecord::<str, str>::to(&topic).key("k").payload("v").timestamp(written + i), Duration::from_secs(10)).await.expect("sent");
    }
    let committer: BaseConsumer = config.client_config(&[("group.id", group.as_str()), ("enable.auto.commit", "false")]).create().expect("consumer");
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(5)).expect("offset");
    committer.commit(&offsets, CommitMode::Sync).expect("commit");
    drop(committer);
    let settings = Settings::default().topic(&registry).heartbeat(Duration::from_secs(600));
    let me = Instance::new("totals", "t-1", "http://127.0.0.1:8001", "0.1.0").expect("valid").with_consumer_groups([group.clone()]);
    let registered = Registration::register(&config, &settings, me).await.expect("register");

    let (code, stdout, stderr) = herald(config.bootstrap(), &["services", "--json", "--topic", &registry]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let services: Value = serde_json::from_str(stdout.trim()).expect("JSON");
    let service = &services[0];
    assert_eq!(service["instances"][0]["consumer_groups"][0], group.as_str(), "{stdout}");
    let lag = &service["consumer_groups"][0];
    assert_eq!(lag["group"], group.as_str(), "{stdout}");
    assert_eq!(lag["state"], "Empty", "{stdout}");
    assert_eq!(lag["members"], 0);
    assert_eq!(lag["lag_records"], 3, "{stdout}");
    let seconds = lag["lag_seconds"].as_f64().expect("seconds");
    assert!((29.0..90.0).contains(&seconds), "the record at offset 5 is 30 s old: {seconds}");
    assert_eq!(lag["partitions"][0]["committed"], 5);
    assert_eq!(lag["partitions"][0]["high_watermark"], 8);

    let (code, stdout, stderr) = herald(config.bootstrap(), &["services", "--topic", &registry]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.lines().any(|l| l.contains(&format!("group {group}  Empty  0 members  assigned none  lag 3 records, 3"))), "{stdout}");
    registered.shutdown().await.expect("deregister");
}
