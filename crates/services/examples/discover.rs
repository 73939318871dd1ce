//! Register two instances of a service, discover them, balance requests, deregister.
//!
//! Run against a local broker:
//!
//! ```text
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run -p herald-services --example discover
//! ```
//!
//! Shows: a registration is visible to a directory once `register` returns; consistent
//! hashing sends one key to one instance; an orderly shutdown (tombstone) removes the
//! instance from every directory at once, and its keys move to the instance left.
//! Uses its own registry topic (`herald.services.example`), not `herald.services`.

use std::time::Duration;

use herald_bus::KafkaConfig;
use herald_services::{Balancer, Directory, Instance, Registration, Settings, Strategy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let config = KafkaConfig::new(bootstrap).with_env(std::env::vars());
    let settings = Settings::default().topic("herald.services.example");
    let pid = std::process::id();
    let a = Registration::register(&config, &settings, Instance::new("order-status", format!("a-{pid}"), "http://127.0.0.1:8081", "0.1.0")?).await?;
    let b = Registration::register(&config, &settings, Instance::new("order-status", format!("b-{pid}"), "http://127.0.0.1:8082", "0.1.0")?).await?;

    let directory = Directory::start(&config, &settings).await?;
    if !directory.caught_up(Duration::from_secs(10)).await {
        return Err("the registry topic was not read to its end within 10 s".into());
    }
    let balancer = Balancer::new(Strategy::ConsistentHash);
    for order in ["order-1", "order-2", "order-3", "order-1"] {
        if let Some(lease) = directory.pick(&balancer, "order-status", Some(order.as_bytes())) {
            println!("{order} -> {} ({})", lease.instance().instance, lease.instance().address);
            lease.succeeded();
        }
    }

    a.shutdown().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while directory.live("order-status").iter().any(|i| i.instance == format!("a-{pid}")) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("after a's shutdown:");
    for order in ["order-1", "order-2", "order-3"] {
        if let Some(lease) = directory.pick(&balancer, "order-status", Some(order.as_bytes())) {
            println!("{order} -> {}", lease.instance().instance);
        }
    }
    b.shutdown().await?;
    directory.shutdown().await;
    Ok(())
}
