//! The `herald-gateway` binary with `shop.toml`, as the demo runs it: no auth, a topic
//! prefix, `/metrics` with the request counters and latency histogram.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use herald_bus::KafkaConfig;
use tokio::process::{Child, Command};

use crate::support::{self, order};

/// The binary with `shop.toml` and topic prefix `prefix` against `kafka`, healthy; its URL.
pub async fn spawn(kafka: &KafkaConfig, prefix: &str) -> (Child, String) {
    spawn_with(kafka, prefix, &[]).await
}

/// [`spawn`] with more arguments.
pub async fn spawn_with(kafka: &KafkaConfig, prefix: &str, extra: &[&str]) -> (Child, String) {
    let shop = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/shop.toml"));
    spawn_configured(kafka, shop, |command| {
        command.args(["--topic-prefix", prefix, "--create-topics", "3"]).args(extra);
    })
    .await
}

/// The binary serving `config` against `kafka` on a free port (stdout discarded, stderr
/// inherited), set up further by `setup` (arguments, environment, output), healthy; its
/// URL.
pub async fn spawn_configured(kafka: &KafkaConfig, config: &Path, setup: impl FnOnce(&mut Command)) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald-gateway"));
    command.arg("--config").arg(config).args(["--bootstrap", kafka.bootstrap(), "--listen", &format!("127.0.0.1:{port}")]);
    command.stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
    setup(&mut command);
    let child = command.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    support::healthy(&url).await;
    (child, url)
}

#[tokio::test]
async fn the_binary_serves_shop_toml_with_a_topic_prefix() {
    let kafka = herald_testkit::kafka().await;
    let prefix = format!("{}.", herald_testkit::unique("gw.bin"));
    let (mut child, url) = spawn(&kafka, &prefix).await;
    let http = reqwest::Client::new();
    let response = http.post(format!("{url}/orders")).json(&order("c-bin")).send().await.unwrap();
    let (status, body) = support::answer(response).await;
    assert_eq!(status, 202, "{body}");
    let topic = format!("{prefix}shop.orders");
    assert_eq!(body["topic"], topic.as_str());
    let events = support::events(&kafka, &topic, 1).await;
    assert_eq!(events[0].body["customer_id"], "c-bin");
    let response = http.post(format!("{url}/orders")).body("{").send().await.unwrap();
    assert_eq!(response.status(), 400);

    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"herald_gateway_requests_total{route="place-order",status="202"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"herald_gateway_requests_total{route="place-order",status="400"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"herald_gateway_request_seconds_bucket{route="place-order",le="0.5"}"#), "{metrics}");
    // Every latency is a Prometheus histogram (summable across instances), the publisher's too.
    for name in ["herald_gateway_request_seconds", "herald_publish_seconds"] {
        assert!(metrics.contains(&format!("# TYPE {name} histogram")), "{metrics}");
    }
    assert!(!metrics.contains(" summary"), "{metrics}");

    let pid = child.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn the_binary_registers_itself_and_deregisters_on_sigterm() {
    let kafka = herald_testkit::kafka().await;
    let prefix = format!("{}.", herald_testkit::unique("gw.reg"));
    let registry = herald_testkit::unique("t.services");
    let (mut child, url) = spawn_with(&kafka, &prefix, &["--registry-topic", &registry]).await;
    let directory = herald_services::Directory::start(&kafka, &herald_services::Settings::default().topic(&registry)).await.unwrap();
    herald_testkit::wait_until(Duration::from_secs(30), "the gateway registered", || async { !directory.live("gateway").is_empty() }).await;
    let me = directory.live("gateway").remove(0);
    assert_eq!(me.address, url, "the bound address is advertised");
    assert!(me.consumer_groups.is_empty(), "the gateway consumes in no group");
    // Its query routes read the same registry: nothing serves order-status yet.
    let response = reqwest::get(format!("{url}/orders/o-1")).await.unwrap();
    assert_eq!(response.status(), 503);
    let pid = child.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
    herald_testkit::wait_until(Duration::from_secs(10), "the gateway deregistered", || async { directory.entries().is_empty() }).await;
    directory.shutdown().await;
}
