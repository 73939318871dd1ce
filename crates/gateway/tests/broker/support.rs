//! A gateway served in-process on a free port, with its own topics; reading the events
//! back.

use std::collections::HashMap;
use std::time::Duration;

use herald_bus::KafkaConfig;
use herald_gateway::{Config, Gateway, Options};
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::Value;

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// An `[idempotency]` section with a topic of its own.
pub fn idempotency_section() -> String {
    format!("[idempotency]\ntopic = {:?}\n", herald_testkit::unique("gw.idem"))
}

pub fn schemas_dir() -> String {
    format!("{}/../../schemas", env!("CARGO_MANIFEST_DIR"))
}

/// The shop's place-order route on `{topic}`, plus whatever `extra` adds.
pub fn orders_route(topic: &str) -> String {
    format!(
        r#"
[[route]]
name = "place-order"
method = "POST"
path = "/orders"
event = "shop.orders.OrderPlaced"
topic = "{topic}"
key = {{ body = "order_id" }}
scopes = ["orders:write"]
fill = {{ order_id = "uuid7", placed_at = "now" }}
"#
    )
}

pub struct Running {
    pub url: String,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Serves `toml` (its `[gateway] schemas` set to the repository's) against `kafka`.
    pub async fn start(kafka: &KafkaConfig, toml: &str) -> Running {
        let text = config_text(toml);
        let config = Config::parse(&text).unwrap();
        let gateway = Gateway::new(config, kafka, Options::default()).await.unwrap();
        Running::serve(gateway, kafka).await
    }

    pub async fn serve(gateway: Gateway, _kafka: &KafkaConfig) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        Running { url, http: reqwest::Client::new(), stop: Some(stop), task: Some(task) }
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self.http.post(format!("{}{path}", self.url)).header("content-type", "application/json").body(body.to_owned()).send().await.unwrap();
        answer(response).await
    }

    pub async fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request = self.http.post(format!("{}{path}", self.url)).header("content-type", "application/json").body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let headers = response.headers().clone();
        let (status, body) = answer(response).await;
        (status, body, headers)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// The full config text the tests serve: `toml` after a `[gateway]` section.
pub fn config_text(toml: &str) -> String {
    let idempotency = if toml.contains("[idempotency]") { String::new() } else { idempotency_section() };
    format!("[gateway]\nschemas = {:?}\nmax_body_bytes = 4096\ndeadline_ms = 5000\n{idempotency}{toml}", schemas_dir())
}

/// Waits (at most a minute) until the gateway at `url` answers `/health` with 200.
pub async fn healthy(url: &str) {
    let http = reqwest::Client::new();
    herald_testkit::wait_until(std::time::Duration::from_secs(60), "the gateway's /health", || {
        let request = http.get(format!("{url}/health")).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
}

pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A valid OrderPlaced body without the server-side fields.
pub fn order(customer: &str) -> Value {
    serde_json::json!({
        "customer_id": customer,
        "total_cents": 2500,
        "currency": "EUR",
        "lines": [{"sku": "sku-1", "quantity": 1, "unit_price_cents": 2500}]
    })
}

/// One event read back: key, headers, payload as JSON.
#[derive(Debug)]
pub struct Event {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

/// Reads `count` events of `topic` (failing after the timeout), decoding OrderPlaced.
pub async fn events(kafka: &KafkaConfig, topic: &str, count: usize) -> Vec<Event> {
    let messages = herald_testkit::read_all(kafka, topic, count, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), count, "events in {topic}");
    messages.iter().map(decode).collect()
}

fn decode(message: &OwnedMessage) -> Event {
    let schemas = herald_bus::schema::SchemaSet::load_dir(schemas_dir()).unwrap();
    let payload = message.payload().unwrap();
    assert_eq!(&payload[..2], &[0xC3, 0x01], "single-object encoding");
    let fingerprint = herald_bus::schema::Fingerprint(payload[2..10].try_into().unwrap());
    let known = schemas.by_fingerprint(&fingerprint).expect("a known writer schema");
    let value = apache_avro::from_avro_datum(&known.schema, &mut &payload[10..], None).unwrap();
    let headers = message
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
        .unwrap_or_default();
    Event {
        key: String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
        partition: message.partition(),
        offset: message.offset(),
        headers,
        body: herald_schema::json::to_json(&value),
    }
}
