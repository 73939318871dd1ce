//! `herald-gateway --config FILE [--bootstrap HOST:PORT] [--listen ADDR] [--topic-prefix P]`
//!
//! Serves the routes of `FILE` (see the library's `config` module) plus `/health` and
//! `/metrics` on `--listen` (default `127.0.0.1:8080`), until Ctrl-C or SIGTERM; then
//! finishes the requests in progress and flushes the producer. `--create-topics N` creates
//! the routes' missing topics with N partitions at start. Kafka client properties: `-X
//! key=value`, or `HERALD_RDKAFKA_*` variables (`HERALD_RDKAFKA_SASL_MECHANISM` is
//! `sasl.mechanism`; `-X` wins).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use herald_bus::admin::{self, TopicSpec};
use herald_bus::KafkaConfig;
use herald_gateway::{Config, Gateway, Options};
use herald_services::announce::{AnnounceArgs, Announcement};

/// HTTP in, Avro events out.
#[derive(Debug, Parser)]
#[command(name = "herald-gateway")]
struct Cli {
    /// The gateway.toml to serve.
    #[arg(long)]
    config: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Prefix of every route's topic (overrides the file's `topic_prefix`), as the shop
    /// services' --topic-prefix.
    #[arg(long, env = "GATEWAY_TOPIC_PREFIX")]
    topic_prefix: Option<String>,
    /// Create the routes' missing topics with this many partitions at start.
    #[arg(long, value_name = "PARTITIONS")]
    create_topics: Option<i32>,
    /// A librdkafka property, `key=value` (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// The service registry: where the query routes find their instances and where the
    /// gateway registers itself (as service `gateway`): `--registry-topic` (default the
    /// topic prefix + `herald.services`), `--advertise`, `--no-register`.
    #[command(flatten)]
    registry: AnnounceArgs,
}

/// jemalloc, not glibc's malloc: measured in BENCHMARKS.md ("Aggregates: the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Taken first: a SIGTERM while the gateway connects and registers stops it in order.
    let shutdown = herald_ops::shutdown_signal();
    let _telemetry = herald_ops::telemetry::init("gateway", "info")?;
    let cli = Cli::parse();
    let config = Config::load(&cli.config)?;
    let kafka = KafkaConfig::new(&cli.bootstrap).with_env(std::env::vars()).with_pairs(&cli.properties)?;
    let metrics = herald_ops::install_metrics().context("installing the metrics recorder")?;
    let prefix = cli.topic_prefix.clone().unwrap_or_else(|| config.gateway.topic_prefix.clone());
    let registry = cli.registry.settings(&prefix);
    let options = Options { topic_prefix: cli.topic_prefix.clone(), metrics: Some(metrics), registry: Some(registry) };
    let gateway = Gateway::new(config, &kafka, options).await?;
    if let Some(partitions) = cli.create_topics {
        let mut topics: Vec<&str> = gateway.routes().iter().map(|r| r.topic.as_str()).collect();
        topics.dedup();
        let specs: Vec<TopicSpec> = topics.iter().map(|t| TopicSpec::new(*t).partitions(partitions)).collect();
        admin::create_topics(&kafka, &specs).await.context("creating the routes' topics")?;
    }
    let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener.local_addr()?;
    for route in gateway.routes() {
        tracing::info!(route = %route.name, method = %route.method, path = %route.path, event = route.event_type(), topic = %route.topic, "route");
    }
    tracing::info!(%addr, bootstrap = kafka.bootstrap(), "herald-gateway listening");
    let announced = Announcement::new("gateway", env!("CARGO_PKG_VERSION")).http(Some(addr)).topic_prefix(&prefix).register(&kafka, &cli.registry).await;
    let served = gateway.serve(listener, shutdown).await;
    announced.shutdown().await;
    served?;
    tracing::info!("herald-gateway stopped");
    Ok(())
}

