//! The `shop` binary registers itself in the service registry and deregisters when it
//! stops in order (against the real broker; its own topic prefix and registry topic), and
//! takes its Kafka client settings from the environment as every Herald program does.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::{Command, Stdio};
use std::time::Duration;

use herald_services::{Directory, Settings};
use herald_testkit::{kafka, unique, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn order_status_registers_with_its_address_and_groups_and_deregisters_on_sigterm() {
    let config = kafka().await;
    let prefix = format!("{}.", unique("shop.reg"));
    let registry = unique("t.services");
    let dir = std::env::temp_dir().join(unique("shop-reg"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["order-status", "--bootstrap", config.bootstrap(), "--http", "127.0.0.1:0", "--instance", "view-1"])
        .args(["--topic-prefix", &prefix, "--registry-topic", &registry, "--registry-heartbeat", "500ms"])
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("view.db").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let address = herald_testkit::printed_address(child.stdout.take().unwrap()).await;

    let settings = Settings::default().topic(&registry);
    let directory = Directory::start(&config, &settings).await.unwrap();
    wait_until(DEADLINE, "order-status registered", || async { !directory.live("order-status").is_empty() }).await;
    let me = directory.live("order-status").remove(0);
    assert_eq!(me.instance, "view-1");
    assert_eq!(me.address, address, "the bound address is advertised");
    let groups: Vec<String> = ["shop.orders", "shop.inventory", "shop.payments"].iter().map(|t| format!("{prefix}shop-order-status.{t}")).collect();
    assert_eq!(me.consumer_groups, groups);
    assert_eq!(me.version, env!("CARGO_PKG_VERSION"));

    let stopped = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
    // The tombstone removes it at once, long before the TTL (15 s by default here) could.
    wait_until(Duration::from_secs(10), "order-status deregistered", || async { directory.entries().is_empty() }).await;
    directory.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// librdkafka properties come from `HERALD_RDKAFKA_*` variables (SASL settings, say): one
/// that librdkafka does not know stops the role at start, named. The binary used to
/// ignore them all.
#[test]
fn kafka_settings_come_from_herald_rdkafka_variables() {
    let mut shop = Command::new(env!("CARGO_BIN_EXE_shop"));
    shop.args(["orders", "--bootstrap", "127.0.0.1:1", "--topic-prefix", "t.env.", "--no-register"]);
    herald_testkit::assert_reads_rdkafka_env(shop);
}
