//! Place an order over HTTP through an in-process gateway with the shop's route, twice with
//! the same `Idempotency-Key`: one event, the same answer.
//!
//! ```sh
//! scripts/kafka start
//! cargo run -p herald-gateway --example place_order [-- 127.0.0.1:9092]
//! ```
//!
//! Shows: `202` only after the broker's acknowledgement, `{id, topic, partition, offset}`;
//! a replay gets the same body with `Idempotent-Replayed: true`; a wrong body gets `400`
//! naming the field.

use herald_bus::KafkaConfig;
use herald_gateway::{Config, Gateway, Options};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9092".to_owned());
    let kafka = KafkaConfig::new(bootstrap);
    let prefix = format!("example.{}.", uuid::Uuid::new_v4().simple());
    let config = Config::load(concat!(env!("CARGO_MANIFEST_DIR"), "/shop.toml").as_ref())?;
    let options = Options { topic_prefix: Some(prefix.clone()), ..Options::default() };
    let gateway = Gateway::new(config, &kafka, options).await?;
    let topics: Vec<_> = gateway.routes().iter().map(|r| herald_bus::admin::TopicSpec::new(&r.topic).partitions(3)).collect();
    herald_bus::admin::create_topics(&kafka, &topics).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(gateway.serve(listener, std::future::pending()));

    let http = reqwest::Client::new();
    let order = serde_json::json!({
        "customer_id": "c-1", "total_cents": 2500, "currency": "EUR",
        "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 2500}]
    });
    for attempt in 1..=2 {
        let response = http.post(format!("{url}/orders")).header("Idempotency-Key", "example-order-1").json(&order).send().await?;
        let replayed = response.headers().contains_key("idempotent-replayed");
        println!("attempt {attempt}: {} replayed={replayed} {}", response.status(), response.text().await?);
    }
    let mut wrong = order.clone();
    wrong["lines"][0]["quantity"] = "two".into();
    let response = http.post(format!("{url}/orders")).json(&wrong).send().await?;
    println!("wrong body: {} {}", response.status(), response.text().await?);
    Ok(())
}
