//! How orders get in: through the gateway over HTTP (`POST /orders`, answered `202` once
//! the broker has the event), as a user's would.

use std::time::Duration;

use anyhow::Context as _;
use herald_shop::OrderPlaced;

/// The gateway orders go in through.
pub struct Ingress {
    /// The gateway's base URL.
    pub url: String,
    /// A keep-alive client.
    pub client: reqwest::Client,
}

impl Ingress {
    /// One line saying how orders go in.
    pub fn describe(&self) -> String {
        format!("through herald-gateway over HTTP: POST {}/orders (202 once the broker has the event)", self.url)
    }

    /// Places `order`; `Ok` once the broker acknowledged it.
    pub async fn place(&self, order: &OrderPlaced) -> anyhow::Result<()> {
        let response = self.client.post(format!("{}/orders", self.url)).json(&body(order)).timeout(Duration::from_secs(30)).send().await.context("POST /orders")?;
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!("POST /orders answered {status}: {text}");
        }
        Ok(())
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
