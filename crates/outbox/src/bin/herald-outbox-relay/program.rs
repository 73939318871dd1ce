//! The relay program: its command line and its life, shared by the binary
//! (`herald-outbox-relay`) and the fault tests' build with crash points
//! (`examples/relay_crash.rs`).

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald_bus::KafkaConfig;
use herald_outbox::relay::{FaultHook, Relay, RelayOptions};
use herald_outbox::OutboxTable;

#[derive(Parser, Debug)]
#[command(version, about = "Relays a PostgreSQL outbox table to Kafka")]
struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "HERALD_OUTBOX_POSTGRES")]
    postgres: String,
    /// The outbox table.
    #[arg(long, default_value = "herald_outbox")]
    table: String,
    /// Buckets of the table (fixed when the table is created).
    #[arg(long, default_value_t = herald_outbox::DEFAULT_BUCKETS)]
    buckets: u32,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// librdkafka properties, `key=value`, repeatable (they win over `HERALD_RDKAFKA_*`
    /// variables: `HERALD_RDKAFKA_SASL_MECHANISM` is `sasl.mechanism`).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Address of /health and /metrics.
    #[arg(long, default_value = "127.0.0.1:9471")]
    http: String,
    /// This relay's name (default: random). Unique among the table's relays: a relay
    /// takes a bucket last held under its own name at once, without the takeover delay.
    #[arg(long)]
    instance: Option<String>,
    /// Rows per batch (at least 1).
    #[arg(long, default_value_t = 1000)]
    batch_size: i64,
    /// Payload bytes per batch (at least 1; a batch always holds one row).
    #[arg(long, default_value_t = 16 << 20)]
    batch_bytes: i64,
    /// Polling interval without notifications, e.g. 1s.
    #[arg(long, default_value = "1s", value_parser = herald_ops::parse_duration)]
    poll_interval: Duration,
    /// Producer delivery timeout (message.timeout.ms).
    #[arg(long, default_value = "30s", value_parser = herald_ops::parse_duration)]
    delivery_timeout: Duration,
    /// Wait before relaying a bucket whose owner vanished (default: delivery timeout + 5s;
    /// must be longer than the delivery timeout).
    #[arg(long, value_parser = herald_ops::parse_duration)]
    takeover_delay: Option<Duration>,
    /// Longest wait for PostgreSQL to answer a statement before reconnecting.
    #[arg(long, default_value = "30s", value_parser = herald_ops::parse_duration)]
    statement_timeout: Duration,
    /// How often relays are recounted and buckets shared out.
    #[arg(long, default_value = "2s", value_parser = herald_ops::parse_duration)]
    rebalance_interval: Duration,
    /// The service registry the relay registers in (as service `outbox-relay`):
    /// `--no-register`, `--registry-topic` (default `herald.services`), `--advertise`.
    #[command(flatten)]
    registry: herald_services::announce::AnnounceArgs,
}

/// Parses the command line and relays until SIGINT or SIGTERM. `fault` is called at each
/// step of a batch (the fault tests' crash points; `None` in the binary).
pub async fn run(fault: Option<FaultHook>) -> anyhow::Result<()> {
    let _telemetry = herald_ops::telemetry::init("outbox-relay", "info")?;
    let args = Args::parse();
    let kafka = KafkaConfig::new(&args.bootstrap).with_env(std::env::vars()).with_pairs(&args.properties).context("-X")?;
    let pg = herald_outbox::config(&args.postgres)?;
    let table = OutboxTable::new(&args.table)?.buckets(args.buckets)?;
    let mut options = RelayOptions {
        batch_size: args.batch_size,
        batch_bytes: args.batch_bytes,
        poll_interval: args.poll_interval,
        delivery_timeout: args.delivery_timeout,
        takeover_delay: args.takeover_delay.unwrap_or(args.delivery_timeout + Duration::from_secs(5)),
        rebalance_interval: args.rebalance_interval,
        statement_timeout: args.statement_timeout,
        ..RelayOptions::default()
    };
    if let Some(instance) = args.instance {
        options.instance = instance;
    }
    // Bad flags fail now, not after the schema is created.
    options.validate()?;
    options.fault = fault;
    let relay_name = options.instance.clone();
    let metrics = herald_ops::install_metrics()?;
    let relay = Relay::new(pg, table, &kafka, options)?;
    // /health from the start: unhealthy, with the reason, while PostgreSQL is not up yet.
    let listener = tokio::net::TcpListener::bind(&args.http).await.with_context(|| format!("binding {}", args.http))?;
    let bound = listener.local_addr()?;
    tracing::info!(http = %bound, "relay serving /health and /metrics");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(herald_ops::serve(listener, metrics, relay.health(), async move {
        let _ = http_stopped.await;
    }));
    relay.ensure_schema(Duration::from_secs(60)).await.context("creating the outbox schema")?;
    let announced = herald_services::announce::Announcement::new("outbox-relay", env!("CARGO_PKG_VERSION"))
        .instance(relay_name)
        .http(Some(bound))
        .register(&kafka, &args.registry)
        .await;
    let ran = relay.run(herald_ops::shutdown_signal()).await;
    announced.shutdown().await;
    let _ = stop_http.send(());
    let _ = http.await;
    Ok(ran?)
}

