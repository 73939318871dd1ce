//! The dashboard's JSON endpoints, asked as the page asks them, of an in-process gateway
//! with an admin API key; then the page stays up until ctrl-c.
//!
//! ```sh
//! scripts/kafka start
//! cargo run -p herald-gateway --example dashboard [-- 127.0.0.1:9092 [TOPIC_PREFIX]]
//! ```
//!
//! Shows: `401` without the key; the topics of the prefix with their rates, the registered
//! services and the dead-letter topics, as JSON; then open the printed URL and log in
//! with the printed key. (`bash scripts/demo --keep-running` runs the whole shop pipeline
//! with its gateway and prints its dashboard's URL.)

use herald_bus::KafkaConfig;
use herald_gateway::auth::hash_key;
use herald_gateway::{Config, Gateway, Options};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9092".to_owned());
    let prefix = std::env::args().nth(2).unwrap_or_default();
    let kafka = KafkaConfig::new(bootstrap);
    // A key made for this run; only its hash is in the configuration.
    let key = uuid::Uuid::new_v4().simple().to_string();
    let text = format!(
        "[gateway]\nschemas = {:?}\n[[auth.api_key]]\nid = \"ops\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"),
        hash_key(&key)
    );
    let options = Options { topic_prefix: Some(prefix.clone()), ..Options::default() };
    let gateway = Gateway::new(Config::parse(&text)?, &kafka, options).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(gateway.serve(listener, herald_ops::shutdown_signal()));

    let http = reqwest::Client::new();
    let anonymous = http.get(format!("{url}/ui/api/topics")).send().await?;
    println!("GET /ui/api/topics without a key: {}", anonymous.status());
    for path in ["/ui/api/topics", "/ui/api/services", "/ui/api/dlq"] {
        let answer: serde_json::Value = http.get(format!("{url}{path}")).header("x-api-key", &key).send().await?.json().await?;
        let text = serde_json::to_string(&answer)?;
        println!("GET {path}: {}", text.chars().take(600).collect::<String>());
    }
    println!("\nthe page: {url}/ui  (log in with the API key {key}); ctrl-c stops");
    herald_ops::shutdown_signal().await;
    Ok(())
}
