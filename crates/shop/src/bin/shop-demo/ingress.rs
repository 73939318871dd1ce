//! How orders get in: through the gateway over HTTP (`POST /orders`, answered `202` once
//! the broker has the event), or, where no gateway is available, published directly with
//! herald-bus's `Publisher` (and the demo says so).

use std::time::Duration;

use anyhow::Context as _;
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_shop::{OrderEvent, OrderPlaced};

/// Where orders go in.
pub enum Ingress {
    /// `POST {url}/orders`.
    Gateway {
        /// The gateway's base URL.
        url: String,
        /// A keep-alive client.
        client: reqwest::Client,
    },
    /// Straight onto the orders topic.
    Direct {
        /// The publisher.
        publisher: Publisher,
        /// The (prefixed) orders topic.
        topic: Topic<OrderEvent>,
    },
}

impl Ingress {
    /// Publishing directly on `topic`.
    pub fn direct(config: &KafkaConfig, topic: &str) -> anyhow::Result<Ingress> {
        let publisher = Publisher::new(config, PublisherOptions::new("/shop/demo-driver")).context("creating the publisher")?;
        Ok(Ingress::Direct { publisher, topic: Topic::named(topic) })
    }

    /// One line saying how orders go in.
    pub fn describe(&self) -> String {
        match self {
            Ingress::Gateway { url, .. } => format!("through herald-gateway over HTTP: POST {url}/orders (202 once the broker has the event)"),
            Ingress::Direct { topic, .. } => format!("published DIRECTLY with herald-bus's Publisher on {} (no gateway in this run)", topic.name()),
        }
    }

    /// Places `order`; `Ok` once the broker acknowledged it.
    pub async fn place(&self, order: &OrderPlaced) -> anyhow::Result<()> {
        match self {
            Ingress::Gateway { url, client } => {
                let response = client.post(format!("{url}/orders")).json(&body(order)).timeout(Duration::from_secs(30)).send().await.context("POST /orders")?;
                let status = response.status();
                if status != reqwest::StatusCode::ACCEPTED {
                    let text = response.text().await.unwrap_or_default();
                    anyhow::bail!("POST /orders answered {status}: {text}");
                }
                Ok(())
            }
            Ingress::Direct { publisher, topic } => {
                publisher.publish(topic, order).await.context("publishing OrderPlaced")?;
                Ok(())
            }
        }
    }

    /// Waits for what is still in flight (direct publishing).
    pub async fn flush(&self) {
        if let Ingress::Direct { publisher, .. } = self {
            let _ = publisher.flush(Duration::from_secs(10)).await;
        }
    }
}

/// The JSON body of `POST /orders`: the `OrderPlaced` fields as the schema names them, but
/// the server-side `placed_at` (the gateway's clock).
fn body(order: &OrderPlaced) -> serde_json::Value {
    let mut body = serde_json::json!({
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "total_cents": order.total_cents,
        "currency": order.currency,
        "lines": order.lines.iter().map(|l| serde_json::json!({"sku": l.sku, "quantity": l.quantity, "unit_price_cents": l.unit_price_cents})).collect::<Vec<_>>(),
    });
    if let Some(note) = &order.note {
        body["note"] = serde_json::Value::String(note.clone());
    }
    body
}
