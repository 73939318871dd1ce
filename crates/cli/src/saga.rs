//! `herald saga check|diagram|list|show|track`.
//!
//! `check` and `diagram` work from the participants' declarations (no broker needed). The
//! saga checked is the one built into this `herald`: the shop's order fulfilment. A
//! team's own saga is checked the same way by calling
//! `herald_choreography::declaration::check` on its participants' declarations (in a unit
//! test, so CI refuses a saga that strands a step).
//!
//! `track` runs the saga tracker (herald-tracker) on the saga's topics into a store, with
//! `/health`, `/metrics`, `GET /sagas` and `GET /sagas/{id}` on `--http`. `list` and
//! `show` read what it recorded: from its store (`--store`, `HERALD_STORE_URL` or
//! `--store-file`, as for `herald projector status`) or from a running tracker (`--url`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use herald_projector::store::StoreUrl;
use herald_tracker::query::{self, Detail, Filter, Summary};
use herald_tracker::shop::Shop;
use herald_ops::parse_duration;
use herald_tracker::{Runner, State};

use crate::context::{shutdown_signal, Context, GlobalArgs};
use crate::exit::{invalid, out, outln};

/// The saga commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the saga: every emitted event has a schema and a consumer or is terminal,
    /// every step a later failure can strand has a compensation, no reaction cycles.
    /// Exits 1 when a problem is found.
    Check,
    /// Print the saga as a Mermaid flowchart.
    Diagram,
    /// List sagas recorded by the tracker, most recently active first.
    List(ListArgs),
    /// Show one saga: its state and its timeline of events.
    Show(ShowArgs),
    /// Run the saga tracker: a projection of the saga's topics into the store, serving
    /// /health, /metrics, GET /sagas and GET /sagas/{id} on --http. Stops on ctrl-c or
    /// SIGTERM.
    Track(TrackArgs),
}

/// Where `list` and `show` read from.
#[derive(Debug, clap::Args)]
pub struct Source {
    /// The tracker's store: `sqlite:PATH` or `postgres://...`. A password here shows in
    /// the process list: prefer `HERALD_STORE_URL` or `--store-file`.
    #[arg(long, env = "HERALD_STORE_URL", hide_env_values = true)]
    pub store: Option<StoreUrl>,
    /// A file holding the store URL; wins over --store.
    #[arg(long, value_name = "PATH")]
    pub store_file: Option<PathBuf>,
    /// A running tracker's HTTP address (`http://HOST:PORT`); wins over the store.
    #[arg(long)]
    pub url: Option<String>,
    /// No progress for longer than this makes a saga stuck (store only; a tracker's HTTP
    /// uses its own).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub stuck_after: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `herald saga list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only stuck sagas: no progress for longer than --stuck-after, or a compensation
    /// that never came.
    #[arg(long)]
    pub stuck: bool,
    /// Only sagas in this state: running, completed, compensated, failed, stuck.
    #[arg(long, value_parser = herald_tracker::http::parse_state)]
    pub state: Option<State>,
    /// Only sagas that started longer ago than this (e.g. 10m, 2h).
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub source: Source,
}

/// Arguments of `herald saga show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The saga's id (its correlation id), or a subject (an order id): its latest saga.
    pub id: String,
    #[command(flatten)]
    pub source: Source,
}

/// Arguments of `herald saga track`.
#[derive(Debug, clap::Args)]
pub struct TrackArgs {
    /// The tracker's store: `sqlite:PATH` or `postgres://...` (or `HERALD_STORE_URL`, or
    /// `--store-file`).
    #[arg(long, env = "HERALD_STORE_URL", hide_env_values = true)]
    pub store: Option<StoreUrl>,
    /// A file holding the store URL; wins over --store.
    #[arg(long, value_name = "PATH")]
    pub store_file: Option<PathBuf>,
    /// Consumer group.
    #[arg(long, default_value = "herald-saga-tracker")]
    pub group: String,
    /// Read `PREFIX<topic>` for each of the saga's topics.
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// How long the group waits for a tracker that stopped answering before its
    /// partitions move to the others, a restarted one included (`session.timeout.ms`;
    /// librdkafka's default is 45s; by default the broker allows 6s to 30m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// No progress for longer than this makes a saga stuck.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub stuck_after: Duration,
    /// Serve HTTP here (`127.0.0.1:0` picks a free port); the bound address is printed as
    /// `http: ADDR` on stdout.
    #[arg(long)]
    pub http: Option<String>,
    /// The service registry the tracker registers in (as service `saga-tracker`):
    /// `--no-register`, `--registry-topic` (default `PREFIX` + `herald.services`),
    /// `--advertise`.
    #[command(flatten)]
    pub registry: herald_services::announce::AnnounceArgs,
}

/// Runs a saga command.
pub async fn run(global: GlobalArgs, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check => {
            let report = herald_shop::saga::check();
            out!("{report}");
            anyhow::ensure!(report.is_ok(), "the saga does not pass its check");
        }
        Command::Diagram => outln!("{}", herald_shop::saga::diagram().trim_end()),
        Command::List(args) => list(args).await?,
        Command::Show(args) => show(args).await?,
        Command::Track(args) => track(&Context::new(global)?, args).await?,
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let filter = Filter { stuck: args.stuck, state: args.state, older_than: args.older_than, stuck_after: args.source.stuck_after, limit: args.limit };
    let sagas: Vec<Summary> = match &args.source.url {
        Some(url) => {
            let mut query: Vec<(&str, String)> = vec![("stuck", filter.stuck.to_string()), ("limit", filter.limit.to_string())];
            query.extend(filter.state.map(|s| ("state", s.as_str().to_owned())));
            query.extend(filter.older_than.map(|d| ("older_than", format!("{}ms", d.as_millis()))));
            get(&format!("{}/sagas", url.trim_end_matches('/')), &query).await?.context("the tracker answered 404 for /sagas")?
        }
        None => {
            let store = open(&args.source)?;
            blocking(move || query::list(&mut *store.connect()?, &filter, chrono::Utc::now())).await?
        }
    };
    if args.source.json {
        outln!("{}", serde_json::to_string(&sagas)?);
        return Ok(());
    }
    let mut text = format!("{:<36}  {:<20}  {:<11}  {:>6}  {:<24}  reason\n", "saga", "subject", "state", "events", "last event");
    for s in &sagas {
        let state = if s.stuck && s.state != State::Stuck { format!("{} (stuck)", s.state) } else { s.state.to_string() };
        let _ = writeln!(text, "{:<36}  {:<20}  {:<11}  {:>6}  {:<24}  {}", s.id, s.subject, state, s.events, time(&s.last_event_at), s.reason.as_deref().unwrap_or(""));
    }
    out!("{text}");
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let found: Option<Detail> = match &args.source.url {
        Some(url) => {
            // The id is one path segment, percent-encoded.
            let mut url = reqwest::Url::parse(url).with_context(|| format!("--url {url:?}"))?;
            url.path_segments_mut().map_err(|()| anyhow::anyhow!("--url cannot take a path"))?.pop_if_empty().extend(["sagas", &args.id]);
            get(url.as_str(), &[]).await?
        }
        None => {
            let store = open(&args.source)?;
            let (id, stuck_after) = (args.id.clone(), args.source.stuck_after);
            blocking(move || query::show(&mut *store.connect()?, &id, chrono::Utc::now(), stuck_after)).await?
        }
    };
    let Some(saga) = found else { invalid!("no saga {:?} (neither a correlation id nor a subject the tracker has seen)", args.id) };
    if args.source.json {
        outln!("{}", serde_json::to_string(&saga)?);
        return Ok(());
    }
    let s = &saga.summary;
    let mut text = format!("saga {}  subject {}\nstate: {}{}", s.id, s.subject, s.state, if s.stuck && s.state != State::Stuck { " (stuck)" } else { "" });
    if let Some(outcome) = &s.outcome {
        let _ = write!(text, ", outcome {outcome}");
    }
    if let Some(reason) = &s.reason {
        let _ = write!(text, "\n  {reason}");
    }
    let _ = writeln!(text, "\n{} events, {} .. {}\n", s.events, time(&s.started_at), time(&s.last_event_at));
    let _ = writeln!(text, "{:<24}  {:<32}  {:<22}  {:<30}  {:<36}  caused by", "time", "type", "source", "topic/partition@offset", "event id");
    for e in &saga.timeline {
        let at = format!("{}/{}@{}", e.topic, e.partition, e.offset);
        let _ = writeln!(text, "{:<24}  {:<32}  {:<22}  {:<30}  {:<36}  {}", time(&e.time), e.event_type, e.source, at, e.event_id, e.causation_id.as_deref().unwrap_or("-"));
    }
    out!("{text}");
    Ok(())
}

async fn track(ctx: &Context, args: TrackArgs) -> anyhow::Result<()> {
    let Some(url) = StoreUrl::from_flags(args.store, args.store_file.as_deref())? else { invalid!("no store: give --store, HERALD_STORE_URL or --store-file") };
    let store = herald_projector::store::open(url.expose()).with_context(|| format!("opening the store {url}"))?;
    // Installed before the tracker is built: its parts take their metric handles then, and
    // handles taken before a recorder exists count nowhere.
    let metrics = args.http.as_ref().map(|_| herald_ops::install_metrics().map_err(|e| anyhow::anyhow!("metrics: {e}"))).transpose()?;
    let tracker = Runner::<Shop>::new(ctx.kafka.clone(), args.group, store)
        .topic_prefix(args.topic_prefix.clone())
        .stuck_after(args.stuck_after)
        .kafka_property("session.timeout.ms", args.session_timeout.as_millis().to_string())
        .build()
        .await
        .context("starting the tracker")?;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut bound = None;
    if let (Some(addr), Some(metrics)) = (&args.http, metrics) {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        bound = Some(addr);
        outln!("http: {addr}");
        let router = herald_ops::router(metrics, tracker.health()).merge(tracker.router());
        let stopped = stop.clone();
        tokio::spawn(async move { herald_ops::serve_router(listener, router, async move { stopped.cancelled().await }).await });
    }
    let announced = herald_services::announce::Announcement::new("saga-tracker", env!("CARGO_PKG_VERSION"))
        .http(bound)
        .consumer_groups(tracker.consumer_groups())
        .topic_prefix(&args.topic_prefix)
        .register(&ctx.kafka, &args.registry)
        .await;
    let ran = tracker.run(shutdown_signal()).await;
    announced.shutdown().await;
    stop.cancel();
    ran.context("the tracker stopped")
}

fn open(source: &Source) -> anyhow::Result<Arc<dyn herald_projector::Store>> {
    let Some(url) = StoreUrl::from_flags(source.store.clone(), source.store_file.as_deref())? else { invalid!("no store: give --store, HERALD_STORE_URL, --store-file or --url") };
    herald_projector::store::open(url.expose()).with_context(|| format!("opening the store {url}"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, herald_projector::StoreError> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?.context("reading the tracker's store")
}

/// GETs JSON from a tracker; `None` on 404.
async fn get<T: serde::de::DeserializeOwned>(url: &str, query: &[(&str, String)]) -> anyhow::Result<Option<T>> {
    let response = reqwest::Client::new().get(url).query(query).timeout(Duration::from_secs(30)).send().await.with_context(|| format!("GET {url}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let response = response.error_for_status().with_context(|| format!("GET {url}"))?;
    Ok(Some(response.json().await.with_context(|| format!("GET {url}: not a tracker's answer"))?))
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
