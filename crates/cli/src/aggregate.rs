//! `herald aggregate show|index`: an aggregate's stream and state, read back by the
//! stream index (herald-aggregate's event-store reads).
//!
//! `show TOPIC ID` reads the stream of aggregate `ID` on event topic `TOPIC` through the
//! `StreamIndex` view in `--store` (the records at the offsets the index gives, plus those
//! after the index's position), decodes each event with the schemas under `--schemas`,
//! and prints it with the state. `--at-version N` or `--at-time T` stops at a version or
//! a time (time travel).
//!
//! # Where the state comes from
//! A state needs the aggregate's `evolve`, which is code, not data. This `herald` knows the
//! aggregates it was built with ([`Known`], a closed enum: the shop's `accounts`) and folds
//! their events with their own `evolve`; it recognises them by their event topic (with any
//! prefix) or by `--aggregate`. For any other topic it prints the stream and says the
//! state is unknown (a program with the aggregate's code reads it with
//! `EventStore::state_at`). It never reads the engine's changelog: that holds only the
//! latest state, and time travel needs the fold anyway.
//!
//! `index TOPIC --store URL` runs the stream index of a known aggregate's topic into the
//! store, serving `/health` and `/metrics` on `--http`, until ctrl-c or SIGTERM.
//!
//! Exit codes: `0` shown; `2` bad input (no store, a topic that does not exist, an index
//! of another topic, a malformed time, an aggregate with no events); `1` a failure
//! talking to Kafka or the store.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use herald_aggregate::store::fold;
use herald_aggregate::{At, EventStore, ReadError, Recorded, StreamIndex};
use herald_bus::codec::{decode_value, SingleObject};
use herald_projector::store::StoreUrl;
use herald_projector::{Projector, StatusHandle};
use herald_shop::accounts::Accounts;
use serde_json::{json, Value};

use crate::context::{shutdown_signal, Context};
use crate::exit::{invalid, out};
use herald_cli::json::AvroJson;

/// The aggregate commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print an aggregate's state and its stream of events, read by the stream index.
    Show(ShowArgs),
    /// Run the stream index of a known aggregate's event topic into --store (/health and
    /// /metrics on --http). Stops on ctrl-c or SIGTERM.
    Index(IndexArgs),
}

/// Where the index is.
#[derive(Debug, clap::Args)]
pub struct IndexStore {
    /// The stream index's store: `sqlite:PATH` or `postgres://...`. A password here shows
    /// in the process list: prefer `HERALD_STORE_URL` or `--store-file`.
    #[arg(long, env = "HERALD_STORE_URL", hide_env_values = true)]
    pub store: Option<StoreUrl>,
    /// A file holding the store URL; wins over --store.
    #[arg(long, value_name = "PATH")]
    pub store_file: Option<PathBuf>,
}

/// Arguments of `herald aggregate show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The aggregate's event topic (for example `shop.accounts`).
    pub topic: String,
    /// The aggregate id.
    pub id: String,
    #[command(flatten)]
    pub index: IndexStore,
    /// The state after the first N events.
    #[arg(long, value_name = "N", conflicts_with = "at_time")]
    pub at_version: Option<i64>,
    /// The state after the events decided at or before T (RFC 3339, e.g. 2026-12-03T14:00:00Z).
    #[arg(long, value_name = "T")]
    pub at_time: Option<String>,
    /// Which built-in aggregate folds the state (default: recognised by the topic).
    #[arg(long, value_enum)]
    pub aggregate: Option<Known>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `herald aggregate index`.
#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    /// The event topic to index.
    pub topic: String,
    #[command(flatten)]
    pub index: IndexStore,
    /// Which built-in aggregate's events the topic holds (default: recognised by the topic).
    #[arg(long, value_enum)]
    pub aggregate: Option<Known>,
    /// The consumer group (default `herald-stream-index-<topic>`).
    #[arg(long)]
    pub group: Option<String>,
    /// Serve /health and /metrics here (`127.0.0.1:0` picks a port, printed as `http: ADDR`).
    #[arg(long)]
    pub http: Option<String>,
    /// The service registry the index registers in (as service `stream-index`):
    /// `--no-register`, `--registry-topic` (default the topic's prefix + `herald.services`),
    /// `--advertise`.
    #[command(flatten)]
    pub registry: herald_services::announce::AnnounceArgs,
}

/// The aggregates this `herald` was built with, whose `evolve` it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Known {
    /// The shop's accounts (`shop.accounts`).
    Accounts,
}

impl Known {
    const ALL: [Known; 1] = [Known::Accounts];

    /// Its [`Aggregate::NAME`](herald_aggregate::Aggregate::NAME).
    fn name(self) -> &'static str {
        match self {
            Known::Accounts => <Accounts as herald_aggregate::Aggregate>::NAME,
        }
    }

    /// Its event topic, unprefixed.
    fn events(self) -> String {
        match self {
            Known::Accounts => herald_shop::accounts::ACCOUNTS.name().to_owned(),
        }
    }

    /// The known aggregate whose event topic `topic` is (`NAME` or `PREFIX.NAME`).
    fn of_topic(topic: &str) -> Option<Known> {
        Known::ALL.into_iter().find(|k| topic == k.events() || topic.strip_suffix(k.events().as_str()).is_some_and(|p| p.ends_with('.')))
    }

    /// The state after `events` (a prefix of the stream from version 1), as JSON.
    fn state(self, events: &[Recorded<Vec<u8>>]) -> Result<Value, ReadError> {
        match self {
            Known::Accounts => Ok(serde_json::to_value(fold(&Accounts, events)?.state).unwrap_or(Value::Null)),
        }
    }
}

/// Runs an aggregate command.
pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Show(args) => show(ctx, args).await,
        Command::Index(args) => index(ctx, args).await,
    }
}

fn open(index: &IndexStore) -> anyhow::Result<Arc<dyn herald_projector::Store>> {
    let Some(url) = StoreUrl::from_flags(index.store.clone(), index.store_file.as_deref())? else { invalid!("no index store: give --store, HERALD_STORE_URL or --store-file") };
    herald_projector::store::open(url.expose()).with_context(|| format!("opening the index store {url}"))
}

/// [`open`] for reading: a SQLite index that is not there is an error, not a new empty file.
fn open_existing(index: &IndexStore) -> anyhow::Result<Arc<dyn herald_projector::Store>> {
    if let Some(url) = StoreUrl::from_flags(index.store.clone(), index.store_file.as_deref())?
        && let Some(path) = url.expose().strip_prefix("sqlite:").map(|p| p.trim_start_matches("//"))
        && !std::path::Path::new(path).exists()
    {
        invalid!("no index at {path}: build it with `herald aggregate index TOPIC --store sqlite:{path}`");
    }
    open(index)
}

/// A read error as the exit code wants it: what the user must fix is [`Invalid`](crate::exit::Invalid).
fn read_failed(e: ReadError) -> anyhow::Error {
    match e {
        ReadError::NotIndexed { .. } | ReadError::NoTopic(_) => crate::exit::Invalid(e.to_string()).into(),
        e @ ReadError::Index(_) => anyhow::Error::new(e).context("reading the stream index (has `herald aggregate index` built it in this store?)"),
        e => anyhow::Error::new(e).context("reading the stream"),
    }
}

async fn show(ctx: &Context, args: ShowArgs) -> anyhow::Result<()> {
    let at = match (&args.at_version, &args.at_time) {
        (Some(n), _) if *n < 0 => invalid!("--at-version {n}: a version is 0 or more"),
        (Some(n), _) => At::Version(*n),
        (None, Some(t)) => match DateTime::parse_from_rfc3339(t) {
            Ok(t) => At::Time(t.with_timezone(&Utc)),
            Err(e) => invalid!("--at-time {t:?}: not an RFC 3339 time ({e})"),
        },
        (None, None) => At::Latest,
    };
    let schemas = ctx.schemas()?;
    let store = open_existing(&args.index)?;
    if herald_bus::admin::partition_count(&ctx.kafka, &args.topic).await.context("cannot read cluster metadata")?.is_none() {
        invalid!("topic {} does not exist", args.topic);
    }
    let known = args.aggregate.or_else(|| Known::of_topic(&args.topic));
    let mut reads = EventStore::new(&ctx.kafka, &args.topic, store).context("creating the reader")?;
    if let Some(k) = known {
        // Records published by hand after the index's position are skipped by their ids.
        reads = reads.written_by(k.name());
    }
    let events = reads.read_stream_until_raw(&args.id, at).await.map_err(read_failed)?;
    if events.is_empty() && (at == At::Latest || reads.read_stream_raw(&args.id, 1).await.map_err(read_failed)?.is_empty()) {
        invalid!("no aggregate {:?} on {}: it has no events", args.id, args.topic);
    }
    let state = match known {
        Some(k) => Some(k.state(&events).map_err(read_failed)?),
        None => None,
    };
    let codec = SingleObject::new(schemas);
    let version = events.last().map_or(0, |e| e.version);
    if let At::Version(asked) = at
        && asked > version
    {
        invalid!("aggregate {:?} on {} is at version {version}: it has no version {asked}", args.id, args.topic);
    }
    if args.json {
        let doc = json!({
            "topic": args.topic,
            "aggregate_id": args.id,
            "at": match at { At::Latest => json!("latest"), At::Version(n) => json!({"version": n}), At::Time(t) => json!({"time": time(&t)}) },
            "version": version,
            "time": events.last().map(|e| time(&e.time)),
            "state": state,
            "events": events.iter().map(|e| event_json(&codec, e)).collect::<Vec<_>>(),
        });
        out!("{}\n", serde_json::to_string(&doc).unwrap_or_default());
        return Ok(());
    }
    let mut text = String::new();
    let _ = writeln!(text, "aggregate {} on {} at version {version}{}", args.id, args.topic, events.last().map(|e| format!(" ({})", time(&e.time))).unwrap_or_default());
    match (&state, known) {
        (Some(state), Some(k)) => {
            let _ = writeln!(text, "state ({:?} evolve): {}", k, serde_json::to_string(state).unwrap_or_default());
        }
        _ => {
            let _ = writeln!(text, "state: unknown (this herald has no evolve for {}; --aggregate names a built-in one)", args.topic);
        }
    }
    let _ = writeln!(text, "\n{:>7}  {:<27}  {:<32}  {:<36}  {:<10}  data", "version", "time", "type", "event id", "at");
    for e in &events {
        let data = event_json(&codec, e)["data"].to_string();
        let _ = writeln!(text, "{:>7}  {:<27}  {:<32}  {:<36}  {:<10}  {data}", e.version, time(&e.time), e.event_type, e.event_id, format!("{}/{}", e.partition, e.offset));
    }
    out!("{text}");
    Ok(())
}

/// One event as JSON: its place, attributes and data decoded with the schemas (or the
/// reason it did not decode).
fn event_json(codec: &SingleObject, e: &Recorded<Vec<u8>>) -> Value {
    let data = codec.split(&e.event).and_then(|(writer, datum)| decode_value(&writer, None, datum));
    let mut doc = json!({
        "version": e.version,
        "time": time(&e.time),
        "type": e.event_type,
        "event_id": e.event_id,
        "causation_id": e.causation_id,
        "partition": e.partition,
        "offset": e.offset,
    });
    match data {
        Ok(value) => doc["data"] = serde_json::to_value(AvroJson(&value)).unwrap_or(Value::Null),
        Err(err) => {
            doc["data"] = Value::Null;
            doc["error"] = json!(err.to_string());
        }
    }
    doc
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn index(ctx: &Context, args: IndexArgs) -> anyhow::Result<()> {
    let Some(known) = args.aggregate.or_else(|| Known::of_topic(&args.topic)) else {
        invalid!("{} is not the event topic of an aggregate this herald knows (--aggregate names one)", args.topic)
    };
    let store = open(&args.index)?;
    let group = args.group.clone().unwrap_or_else(|| format!("herald-stream-index-{}", args.topic));
    let status = StatusHandle::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut bound = None;
    if let Some(addr) = &args.http {
        let metrics = herald_ops::install_metrics().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        bound = Some(addr);
        out!("http: {addr}\n");
        let router = herald_ops::router(metrics, status.clone());
        let stopped = stop.clone();
        tokio::spawn(async move { herald_ops::serve_router(listener, router, async move { stopped.cancelled().await }).await });
    }
    // The topic's prefix (`run-7.` of `run-7.shop.accounts`) prefixes the registry too.
    let prefix = args.topic.strip_suffix(known.events().as_str()).unwrap_or_default();
    let announced = herald_services::announce::Announcement::new("stream-index", env!("CARGO_PKG_VERSION"))
        .http(bound)
        .consumer_groups([group.clone()])
        .topic_prefix(prefix)
        .register(&ctx.kafka, &args.registry)
        .await;
    let ran = match known {
        Known::Accounts => {
            let topic = herald_bus::Topic::named(&args.topic);
            match Projector::builder(ctx.kafka.clone(), group, &topic, StreamIndex::<Accounts>::new(), store).handles(status, Default::default()).build().await {
                Ok(projector) => projector.run(shutdown_signal()).await.map(|_| ()).context("the index stopped"),
                Err(e) => Err(e).context("starting the index"),
            }
        }
    };
    announced.shutdown().await;
    stop.cancel();
    ran
}

#[cfg(test)]
mod tests {
    use super::Known;

    #[test]
    fn built_in_aggregates_are_recognised_by_their_event_topic_with_any_prefix() {
        assert_eq!(Known::of_topic("shop.accounts"), Some(Known::Accounts));
        assert_eq!(Known::of_topic("run-7.shop.accounts"), Some(Known::Accounts));
        assert_eq!(Known::of_topic("myshop.accounts"), None);
        assert_eq!(Known::of_topic("shop.accounts.commands"), None);
        assert_eq!(Known::of_topic("shop.orders"), None);
    }
}
