//! The reference projector: `customer_totals` from `shop.orders` events.
//!
//! ```sh
//! cargo run --release -p herald-projector --example order_totals -- \
//!     --topic shop.orders --group order-totals --store sqlite:order_totals.db
//! # or --store postgres://herald@127.0.0.1:55432/herald
//! curl localhost:PORT/views/customer_totals/customer-7
//! curl localhost:PORT/status
//! ```
//!
//! What it shows: the view and the projector's position commit in one transaction, so
//! killing it at any point (try `kill -9`, or `HERALD_PROJECTOR_CRASH_AT=after_apply:3`)
//! and starting it again leaves `customer_totals` equal to a fold of the whole topic:
//! nothing lost, nothing counted twice. Poison events go to `<topic>.dlq` with a reason.
//!
//! Serves `GET /health`, `GET /metrics`, `GET /status`, `GET /views/customer_totals/{key}`
//! and `POST /partitions/{p}/retry|skip` on `--http` (default: a free port, printed as
//! `http: ADDR` on stdout). Stops cleanly on SIGTERM or ctrl-c.

mod projection;

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use herald_bus::{KafkaConfig, RetryPolicy, Topic};
use herald_projector::crash::CrashPoint;
use herald_projector::{rebuild, store, Connection, Control, OnPoison, Projector, StatusHandle, StopAt, Stopped, Store, Value};
use herald_shop::OrderEvent;

use projection::OrderTotals;

#[derive(Parser, Debug)]
#[command(about = "Projects shop.orders events into customer_totals")]
struct Args {
    /// Topic to project.
    #[arg(long, default_value = "shop.orders")]
    topic: String,
    /// Consumer group.
    #[arg(long, default_value = "order-totals")]
    group: String,
    /// sqlite:PATH or postgres://...
    #[arg(long, default_value = "sqlite:order_totals.db")]
    store: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Address for /health, /metrics, /status and /views.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: String,
    /// Most events per transaction.
    #[arg(long, default_value_t = 1000)]
    max_batch: usize,
    /// What to do with poison events: dead-letter or pause.
    #[arg(long, default_value = "dead-letter")]
    on_poison: String,
    /// Handler attempts before an event is poison.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Extra librdkafka consumer properties, key=value.
    #[arg(short = 'X')]
    kafka: Vec<String>,
    /// Rebuild the view from the beginning of the log into a new version, swap it in, exit.
    #[arg(long)]
    rebuild: bool,
    /// Time travel: build a new version up to this time (RFC 3339), keep it beside the
    /// live one, exit.
    #[arg(long)]
    until_time: Option<String>,
    /// Time travel: build a new version up to these offsets (`partition:offset,...`).
    #[arg(long)]
    until_offsets: Option<String>,
    /// Make the previous version live again, exit.
    #[arg(long)]
    rollback: bool,
    /// Show a progress bar while rebuilding.
    #[arg(long)]
    progress: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).with_writer(std::io::stderr).init();
    let args = Args::parse();
    let store = store::open(&args.store)?;
    let config = KafkaConfig::new(&args.bootstrap);
    let topic: Topic<OrderEvent> = Topic::named(args.topic.clone());
    let retry = RetryPolicy { max_attempts: args.max_attempts, initial: std::time::Duration::from_millis(50), max: std::time::Duration::from_secs(2), ..Default::default() };
    if args.rollback {
        let live = rebuild::rollback(OrderTotals, store).await?;
        println!("live version: {live:?}");
        return Ok(());
    }
    if args.rebuild || args.until_time.is_some() || args.until_offsets.is_some() {
        let mut options = rebuild::Options::new(&args.group);
        options.progress = args.progress;
        if let Some(t) = &args.until_time {
            let t = chrono::DateTime::parse_from_rfc3339(t).context("--until-time expects RFC 3339")?;
            options.until = StopAt::Before(t.timestamp_millis());
        } else if let Some(offsets) = &args.until_offsets {
            let mut map = std::collections::BTreeMap::new();
            for pair in offsets.split(',') {
                let (p, o) = pair.split_once(':').context("--until-offsets expects partition:offset,...")?;
                map.insert(p.trim().parse()?, o.trim().parse()?);
            }
            options.until = StopAt::Offsets(map);
        }
        let rebuilt = rebuild::rebuild(&config, &topic, || OrderTotals, store, options, shutdown_signal()).await?;
        println!(
            "rebuilt: version {} with {} events in {:.1}s ({:.0} events/s); swapped: {}; previous: {:?}",
            rebuilt.version,
            rebuilt.events,
            rebuilt.elapsed.as_secs_f64(),
            rebuilt.events as f64 / rebuilt.elapsed.as_secs_f64().max(1e-9),
            rebuilt.swapped,
            rebuilt.previous
        );
        return Ok(());
    }

    let metrics = herald_ops::install_metrics()?;
    let (status, control) = (StatusHandle::default(), Control::default());
    let views = Router::new().route("/views/customer_totals/{key}", get(customer_total)).with_state(Views { store: store.clone(), conn: Arc::new(Mutex::new(None)) });
    let app = herald_ops::router(metrics, status.clone()).merge(herald_projector::http::router(status.clone(), control.clone())).merge(views);
    let listener = tokio::net::TcpListener::bind(&args.http).await?;
    println!("http: {}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await }
    });
    let shutdown = stop_on_signal();
    loop {
        let mut builder = Projector::builder(config.clone(), &args.group, &topic, OrderTotals, store.clone())
            .max_batch(args.max_batch)
            .retry(retry)
            .handles(status.clone(), control.clone())
            .on_poison(if args.on_poison == "pause" { OnPoison::Pause } else { OnPoison::DeadLetter });
        for pair in &args.kafka {
            let (k, v) = pair.split_once('=').context("-X expects key=value")?;
            builder = builder.kafka_property(k, v);
        }
        // Fault tests only: abort at a chosen point of the pipeline.
        if let Ok(at) = std::env::var("HERALD_PROJECTOR_CRASH_AT") {
            builder = builder.crash_point(at.parse::<CrashPoint>().map_err(anyhow::Error::msg)?);
        }
        let projector = builder.build().await?;
        let signal = shutdown.clone();
        match projector.run(async move { signal.cancelled().await }).await? {
            // A rebuild swapped in another version: continue with it.
            Stopped::Superseded { live } => tracing::info!(live, "continuing with the new live version"),
            _ => break,
        }
    }
    stop.cancel();
    let _ = server.await;
    Ok(())
}

/// A token cancelled on SIGTERM or ctrl-c.
fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        t.cancel();
    });
    token
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[derive(Clone)]
struct Views {
    store: Arc<dyn Store>,
    conn: Arc<Mutex<Option<Box<dyn Connection>>>>,
}

async fn customer_total(State(views): State<Views>, Path(key): Path<String>) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let found = tokio::task::spawn_blocking(move || {
        let mut conn = views.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_none() {
            *conn = Some(views.store.connect()?);
        }
        let c = conn.as_mut().ok_or_else(|| herald_projector::StoreError::Connect("no connection".into()))?;
        let read = (|| {
            let mut tx = c.read()?;
            let row = tx.query_opt("SELECT customer_id, orders, total_cents FROM customer_totals WHERE customer_id = $1", &[Value::Text(&key)])?;
            tx.rollback()?;
            Ok::<_, herald_projector::StoreError>(row)
        })();
        if read.is_err() {
            *conn = None;
        }
        read
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    match found {
        Some(row) => Ok(Json(row.to_json())),
        None => Err((StatusCode::NOT_FOUND, "no such customer".into())),
    }
}
