//! How orders get in: through the gateway over HTTP (`POST /orders`, answered `202` once
//! the broker has the event), as a user's would: each order with an `Idempotency-Key`, and
//! retried with the same key while the gateway cannot take it (a `503` while the broker is
//! away, a `409` while the first try is still in progress, no answer), so a retry never
//! makes a second order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use herald_shop::OrderPlaced;
use reqwest::StatusCode;
use tokio::time::Instant;

/// How long an order is retried while the gateway cannot take it.
pub const RETRY_FOR: Duration = Duration::from_secs(60);

/// The longest `Idempotency-Key` the gateway takes.
const KEY_LIMIT: usize = 255;

/// The longest pause between two tries (they start 200 ms apart and double).
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// The gateway orders go in through.
pub struct Ingress {
    /// The gateway's base URL.
    pub url: String,
    /// A keep-alive client.
    pub client: reqwest::Client,
    /// How many tries were retries.
    pub retried: AtomicUsize,
}

/// Why one try did not place the order.
enum Refused {
    /// Worth another try with the same key.
    ForNow(anyhow::Error, Option<Duration>),
    /// Final (a `400`, a `422`, ...).
    Final(anyhow::Error),
}

impl Ingress {
    /// An ingress through the gateway at `url`.
    pub fn new(url: String, client: reqwest::Client) -> Self {
        Ingress { url, client, retried: AtomicUsize::new(0) }
    }

    /// One line saying how orders go in.
    pub fn describe(&self) -> String {
        format!(
            "through herald-gateway over HTTP: POST {}/orders (202 once the broker has the event), each with an Idempotency-Key, retried with it for up to {} s on 503, 409 or no answer",
            self.url,
            RETRY_FOR.as_secs()
        )
    }

    /// Places `order`; `Ok` once the broker acknowledged it.
    pub async fn place(&self, order: &OrderPlaced) -> anyhow::Result<()> {
        let body = body(order);
        let key = idempotency_key(&order.order_id);
        let deadline = Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(200);
        let mut tries = 1;
        loop {
            let error = match self.try_place(&key, &body).await {
                Ok(()) => return Ok(()),
                Err(Refused::Final(e)) => return Err(e),
                Err(Refused::ForNow(e, retry_after)) => {
                    let wait = retry_after.unwrap_or(pause).min(LONGEST_PAUSE);
                    if Instant::now() + wait < deadline {
                        tokio::time::sleep(wait).await;
                        pause = (pause * 2).min(LONGEST_PAUSE);
                        tries += 1;
                        self.retried.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    e
                }
            };
            return Err(error.context(format!("gave up after {tries} tries over {} s", RETRY_FOR.as_secs())));
        }
    }

    async fn try_place(&self, key: &str, body: &serde_json::Value) -> Result<(), Refused> {
        let sent = self.client.post(format!("{}/orders", self.url)).header("idempotency-key", key).json(body).timeout(Duration::from_secs(30)).send().await;
        let response = match sent.context("POST /orders") {
            Ok(response) => response,
            Err(e) => return Err(Refused::ForNow(e, None)),
        };
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            return Ok(());
        }
        let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let error = anyhow::anyhow!("POST /orders answered {status}: {text}");
        Err(match status {
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Refused::ForNow(error, retry_after),
            _ => Refused::Final(error),
        })
    }
}

/// The order's `Idempotency-Key`: its id, or a hash of it when the id is not a valid key
/// (longer than 255 characters, or not visible ASCII). The hash only has to be the same for
/// this process's retries.
fn idempotency_key(order_id: &str) -> String {
    use std::hash::{Hash, Hasher};
    let key = format!("order-{order_id}");
    if key.len() <= KEY_LIMIT && key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return key;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    order_id.hash(&mut hasher);
    format!("order-hash-{:016x}-{}", hasher.finish(), order_id.len())
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::*;

    /// A gateway that answers each `POST /orders` with the next of `answers`, and records
    /// each request's `Idempotency-Key`.
    async fn gateway(answers: Vec<StatusCode>) -> (String, Arc<Mutex<Vec<String>>>) {
        let keys = Arc::new(Mutex::new(Vec::new()));
        let (seen, answers) = (keys.clone(), Arc::new(Mutex::new(answers.into_iter())));
        let app = axum::Router::new().route(
            "/orders",
            post(move |headers: HeaderMap| async move {
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                seen.lock().expect("keys").push(key);
                answers.lock().expect("answers").next().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, keys)
    }

    #[tokio::test]
    async fn an_order_is_retried_with_the_same_key_until_the_gateway_takes_it() {
        let (url, keys) = gateway(vec![StatusCode::SERVICE_UNAVAILABLE, StatusCode::CONFLICT, StatusCode::ACCEPTED]).await;
        let ingress = Ingress::new(url, reqwest::Client::new());
        ingress.place(&OrderPlaced::example("o-1", "c-1", 100)).await.expect("placed on the third try");
        assert_eq!(*keys.lock().expect("keys"), ["order-o-1"; 3]);
        assert_eq!(ingress.retried.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_refusal_that_a_retry_cannot_change_is_not_retried() {
        let (url, keys) = gateway(vec![StatusCode::UNPROCESSABLE_ENTITY, StatusCode::ACCEPTED]).await;
        let ingress = Ingress::new(url, reqwest::Client::new());
        let error = ingress.place(&OrderPlaced::example("o-2", "c-1", 100)).await.expect_err("422 is final");
        assert!(error.to_string().contains("422"), "{error:#}");
        assert_eq!(keys.lock().expect("keys").len(), 1);
        assert_eq!(ingress.retried.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_id_that_is_not_a_valid_key_is_hashed_the_same_way_each_time() {
        let long = "x".repeat(1_000);
        let key = idempotency_key(&long);
        assert!(key.len() <= KEY_LIMIT && key.starts_with("order-hash-"), "{key}");
        assert_eq!(key, idempotency_key(&long));
        assert_ne!(key, idempotency_key(&"y".repeat(1_000)));
        assert_eq!(idempotency_key("o-1"), "order-o-1");
    }
}
