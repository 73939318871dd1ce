//! Publish domain events: typed, Avro-encoded, keyed by aggregate, acknowledged.
//!
//! ```sh
//! scripts/kafka start
//! cargo run -p herald-examples --example publish -- 1000
//! ```
//!
//! Creates the `shop.orders` topic (6 partitions, kept forever) if missing, publishes the
//! given number of orders (each placed, every third confirmed, every fifth cancelled) as a
//! batch with bounded in-flight sends, and prints where they landed. Guarantee shown:
//! every event printed was acknowledged by all in-sync replicas, and one order's events
//! share one partition, in order.

use std::time::{Duration, Instant};

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::timestamp::TimestampMillis;
use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderPlaced, ORDERS};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let count: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(100);
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let config = KafkaConfig::new(bootstrap).with_env(std::env::vars());

    create_topics(&config, &[TopicSpec::new(ORDERS.name()).partitions(6)]).await?;
    let publisher = Publisher::new(&config, PublisherOptions::new("/examples/publish"))?;

    let started = Instant::now();
    let placed: Vec<OrderPlaced> = (0..count).map(|i| OrderPlaced { placed_at: Some(TimestampMillis::now()), ..OrderPlaced::example(&format!("order-{i}"), &format!("customer-{}", i % 17), 100 + i as i64) }).collect();
    let results = publisher.publish_all(&ORDERS, &placed).await;
    let mut failures = 0;
    for (event, result) in placed.iter().zip(&results) {
        match result {
            Ok(p) if count <= 20 => println!("{} -> partition {} offset {} id {}", event.order_id, p.partition, p.offset, p.id),
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                eprintln!("{}: {e}", event.order_id);
            }
        }
    }
    // Follow-ups for some orders: the same key, so the same partition, after the placement.
    for i in (0..count).step_by(3) {
        publisher.publish(&ORDERS, &OrderConfirmed { confirmed_at: Some(TimestampMillis::now()), ..OrderConfirmed::example(&format!("order-{i}"), &format!("pay-{i}")) }).await?;
    }
    for i in (0..count).step_by(5) {
        let cancelled = OrderCancelled { cancelled_at: Some(TimestampMillis::now()), ..OrderCancelled::example(&format!("order-{i}"), "customer request", Some("customer")) };
        publisher.publish(&ORDERS, &cancelled).await?;
    }
    publisher.flush(Duration::from_secs(30)).await?;
    println!("published {} orders ({} failed) in {:?}", count - failures, failures, started.elapsed());
    anyhow::ensure!(failures == 0, "{failures} events were not acknowledged");
    Ok(())
}
