//! `shop orders|inventory|payments`: one role of the reference saga, on the choreography
//! engine; `shop accounts`: the accounts aggregate, on the same engine (exactly once; see herald-choreography's `engine`); `shop order-status`: the
//! order-status read view (herald_shop::order_status) on herald-projector.
//!
//! - `orders`: the `orders` participant (`--payment-timeout`, default `30s`).
//! - `inventory`: `inventory-reservations` and `inventory-stock` (`--stock FILE`, a JSON
//!   object `{"SKU": quantity}`).
//! - `payments`: `payments-billing` and `payments-credit` (`--credit FILE`, a JSON object
//!   `{"customer_id": cents}`; `--default-credit CENTS`, default 100000).
//! - `accounts`: the accounts aggregate (herald_shop::accounts): commands on
//!   `shop.accounts.commands`, events on `shop.accounts`, replies on the topic each command
//!   names (the shop's clients use `shop.accounts.replies`); decided one at a time per
//!   account, exactly once, by whichever instance owns the account's partition.
//! - `order-status`: the view's three projectors (one per public topic, consumer groups
//!   `PREFIX` + `--group` + `.TOPIC`) into `--store` (default `sqlite:order_status.db`),
//!   serving `GET /views/order_status[/{order_id}]` beside `/health` and `/metrics`.
//!
//! Each instance creates the shop's topics if missing (6 partitions), joins its role's
//! consumer groups (the engines' with static membership: `--instance`, default host name
//! and process id, and a stable transactional id; the view's dynamically), and stops in
//! order on Ctrl-C / SIGTERM. An instance that does not come back loses its partitions to
//! the others after `--session-timeout` (default 10 s). `--topic-prefix` (or `SHOP_TOPIC_PREFIX`) runs a separate copy of the
//! saga on the same cluster: every topic, group and transactional id gets the prefix.
//! With `--http ADDR` the bound address is printed as `http: ADDR` on stdout
//! (`127.0.0.1:0` picks a free port).
//!
//! Every instance registers in the service registry (service `orders`, `inventory`,
//! `payments` or `order-status`, with its HTTP address and consumer groups) and
//! deregisters when it stops in order; `--no-register`, `--registry-topic` (default
//! `PREFIX` + `herald.services`) and `--advertise URL` as in
//! `herald_services::announce`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use herald_bus::admin::{self, TopicSpec};
use herald_bus::KafkaConfig;
use herald_choreography::engine::{Engine, EngineError, EngineHealth, EngineSettings};
use herald_choreography::Participant;
use herald_services::announce::{AnnounceArgs, Announcement};
use herald_shop::saga::{Billing, Credit, Orders, Reservations, Stock};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    Orders,
    Inventory,
    Payments,
    /// The order-status read view.
    OrderStatus,
    /// The accounts aggregate (a wallet per customer; herald-aggregate).
    Accounts,
}

/// One role of the shop's order-fulfilment saga.
#[derive(Debug, Parser)]
#[command(name = "shop")]
struct Cli {
    /// The role to run.
    #[arg(value_enum)]
    role: Role,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// This instance's stable name (default: host name and process id).
    #[arg(long)]
    instance: Option<String>,
    /// File with the initial stock per SKU (a JSON object of integers), for `inventory`.
    #[arg(long)]
    stock: Option<PathBuf>,
    /// File with the initial credit per customer in cents (a JSON object of integers),
    /// for `payments`.
    #[arg(long)]
    credit: Option<PathBuf>,
    /// Credit of customers not in `--credit`, in cents.
    #[arg(long, default_value_t = 100_000)]
    default_credit: i64,
    /// How long an outcome may take after this role took in the `OrderPlaced` (`500ms`,
    /// `30s`, `2m`); a role that lags or was down starts the wait late.
    #[arg(long, default_value = "30s", value_parser = herald_ops::parse_duration)]
    payment_timeout: Duration,
    /// Serve `/health` and `/metrics` here (for example `127.0.0.1:9464`).
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// Prefix of every topic, consumer group and transactional id (default none: the
    /// public names `shop.orders`, ...).
    #[arg(long, env = "SHOP_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// How long the group waits for an instance that stopped answering before its
    /// partitions move to the others (`session.timeout.ms`; by default the broker allows
    /// 6s to 30m).
    #[arg(long, default_value = "10s", value_parser = herald_ops::parse_duration)]
    session_timeout: Duration,
    /// How long a transaction gathers reactions before it commits (it commits sooner
    /// once no input came for 5 ms).
    #[arg(long, default_value = "100ms", value_parser = herald_ops::parse_duration)]
    commit_interval: Duration,
    /// Commit once no input came for this long, before --commit-interval (`off`: only
    /// the interval and 1000 reactions).
    #[arg(long, default_value = "5ms", value_parser = parse_idle)]
    commit_when_idle: IdleCommit,
    /// For `inventory` and `payments`: how long a SKU's stock and a customer's credit
    /// remember an order after it last changed them (for a late release or refund, and to
    /// ignore duplicates); at least 1m, and keep it well above the orders role's
    /// --payment-timeout.
    #[arg(long, default_value = "24h", value_parser = parse_remember)]
    remember_orders: Duration,
    /// The view's store, for `order-status`: `sqlite:PATH` (or `postgres://...` where the
    /// projector is built with it).
    #[arg(long, env = "HERALD_STORE_URL", hide_env_values = true, default_value = "sqlite:order_status.db")]
    store: herald_projector::store::StoreUrl,
    /// Consumer group of `order-status` (after the prefix; `.TOPIC` is appended per topic).
    #[arg(long, default_value = "shop-order-status")]
    group: String,
    /// The service registry (`--no-register`, `--registry-topic`, `--advertise`).
    #[command(flatten)]
    registry: AnnounceArgs,
}

impl Role {
    /// The service name the role registers as.
    fn service(self) -> &'static str {
        match self {
            Role::Orders => "orders",
            Role::Inventory => "inventory",
            Role::Payments => "payments",
            Role::OrderStatus => "order-status",
            Role::Accounts => "accounts",
        }
    }
}

fn read_map(path: &Option<PathBuf>) -> anyhow::Result<HashMap<String, i64>> {
    match path {
        None => Ok(HashMap::new()),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{}: expected a JSON object of integers", path.display()))
        }
    }
}

/// The health of each of the role's engines (the current one after a restart): healthy
/// when all are.
struct Healths(Vec<Arc<Mutex<Arc<EngineHealth>>>>);

impl herald_ops::HealthCheck for Healths {
    fn check(&self) -> (bool, serde_json::Value) {
        let checks: Vec<(bool, serde_json::Value)> = self.0.iter().map(|h| h.lock().unwrap_or_else(|p| p.into_inner()).check()).collect();
        (checks.iter().all(|(ok, _)| *ok), serde_json::Value::Array(checks.into_iter().map(|(_, v)| v).collect()))
    }
}

struct Runner {
    config: KafkaConfig,
    settings: EngineSettings,
    stop: CancellationToken,
    healths: Vec<Arc<Mutex<Arc<EngineHealth>>>>,
    /// The consumer group of each participant started.
    groups: Vec<String>,
    tasks: tokio::task::JoinSet<Result<(), EngineError>>,
}

impl Runner {
    /// Runs `participant` until the stop, starting its engine again from its committed
    /// state when it stops on an error a restart can mend: a fatal client error, for
    /// example librdkafka fencing a static member whose session timed out while the broker
    /// was away (librdkafka#3437), ends the engine's consumer for good. A permanent error
    /// (the topics are not co-partitioned) ends the task, and the process; so does being
    /// fenced again within [`FENCED_AGAIN_WITHIN`] of a restart, which means another
    /// process runs with the same `--instance` (each would otherwise fence the other back
    /// for ever).
    fn start<P: Participant + Clone>(&mut self, participant: P) -> anyhow::Result<()> {
        let engine = Engine::new(&self.config, participant.clone(), self.settings.clone()).with_context(|| format!("participant {}", P::NAME))?;
        let health = Arc::new(Mutex::new(engine.health()));
        self.healths.push(health.clone());
        self.groups.push(engine.group());
        let (config, settings, stop) = (self.config.clone(), self.settings.clone(), self.stop.clone());
        self.tasks.spawn(async move {
            let mut engine = engine;
            let mut started = tokio::time::Instant::now();
            for restarts in 1u32.. {
                let until = stop.clone();
                match engine.run(async move { until.cancelled().await }).await {
                    Ok(()) => return Ok(()),
                    Err(e) if e.is_permanent() || stop.is_cancelled() => return Err(e),
                    // Fenced again soon after a restart: not the broker's outage
                    // (librdkafka#3437) but a process with the same --instance, and
                    // restarting would only fence it back, for ever.
                    Err(e) if e.is_fenced_instance() && restarts > 1 && started.elapsed() < FENCED_AGAIN_WITHIN => {
                        tracing::error!(participant = P::NAME, error = %e, "fenced again {:?} after a restart: another process runs with this instance id; give each its own --instance", started.elapsed());
                        return Err(e);
                    }
                    Err(e) => {
                        let pause = RESTART_PAUSE * restarts.min(10);
                        tracing::error!(participant = P::NAME, error = %e, restarts, ?pause, "engine stopped: starting it again from its committed state");
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                }
                engine = Engine::new(&config, participant.clone(), settings.clone())?;
                started = tokio::time::Instant::now();
                *health.lock().unwrap_or_else(|p| p.into_inner()) = engine.health();
            }
            Ok(())
        });
        Ok(())
    }
}

/// The pause before an engine that stopped on an error starts again (times the restarts
/// in a row, at most ten).
const RESTART_PAUSE: Duration = Duration::from_millis(500);

/// An engine fenced by its group again within this long after a restart stops the
/// process: see [`Runner::start`].
const FENCED_AGAIN_WITHIN: Duration = Duration::from_secs(60);

/// Waits until every topic of `specs` shows in the cluster's metadata: topic creation is
/// asynchronous, and the engines check their inputs' partitions as they start.
async fn await_topics(config: &KafkaConfig, specs: &[TopicSpec]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for spec in specs {
        while admin::partition_count(config, &spec.name).await.map_err(|e| anyhow::anyhow!("{e}"))?.is_none() {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "topic {} was created but does not show in the metadata", spec.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A token cancelled on ctrl-c or SIGTERM. The handlers are installed at once, so a
/// signal that comes while the role still starts (creating topics, restoring, registering)
/// stops it in order rather than killing it.
fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let signal = herald_ops::shutdown_signal();
    let cancel = stop.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("stopping");
        cancel.cancel();
    });
    stop
}

/// The health of the view's projectors: healthy when all are.
struct Projectors(Vec<herald_projector::StatusHandle>);

impl herald_ops::HealthCheck for Projectors {
    fn check(&self) -> (bool, serde_json::Value) {
        let checks: Vec<(bool, serde_json::Value)> = self.0.iter().map(herald_ops::HealthCheck::check).collect();
        (checks.iter().all(|(ok, _)| *ok), serde_json::Value::Array(checks.into_iter().map(|(_, v)| v).collect()))
    }
}

/// `--commit-when-idle`: a duration, or `off`.
#[derive(Debug, Clone, Copy)]
struct IdleCommit(Option<Duration>);

fn parse_idle(s: &str) -> Result<IdleCommit, String> {
    if s == "off" {
        return Ok(IdleCommit(None));
    }
    herald_ops::parse_duration(s).map(|d| IdleCommit(Some(d)))
}

/// `--remember-orders`: at least a minute (shorter would forget orders mid-saga).
fn parse_remember(s: &str) -> Result<Duration, String> {
    let d = herald_ops::parse_duration(s)?;
    if d < Duration::from_secs(60) {
        return Err(format!("{s:?} is shorter than 1m: orders would be forgotten while their sagas still run"));
    }
    Ok(d)
}

/// The Prometheus recorder when the role serves `/metrics` (`--http`). Installed before the
/// role starts its engines or projectors: they take their metric handles when they start.
fn served_metrics(cli: &Cli) -> anyhow::Result<Option<herald_ops::MetricsHandle>> {
    cli.http.map(|_| herald_ops::install_metrics().map_err(|e| anyhow::anyhow!("metrics: {e}"))).transpose()
}

/// `shop order-status`: the view's projectors until ctrl-c or SIGTERM, the first that
/// stops by itself stopping the others (and the process, with its error).
async fn order_status(cli: &Cli, config: &KafkaConfig, instance: &str, stop: CancellationToken) -> anyhow::Result<()> {
    let store = herald_projector::store::open(cli.store.expose()).with_context(|| format!("opening the store {}", cli.store))?;
    let group = format!("{}{}", cli.topic_prefix, cli.group);
    let metrics = served_metrics(cli)?;
    // The roles' session timeout (librdkafka's default is 45 s): a view killed and
    // started again reads on once its predecessor's session expired. Not static
    // membership, as the roles' engines have: librdkafka fences a static member whose
    // session expired while the broker was away (librdkafka#3437), which ends a
    // projector's consumer for good, and a static member's clean stop does not hand its
    // partitions over.
    let properties = [("session.timeout.ms".to_owned(), cli.session_timeout.as_millis().to_string())];
    let projectors = herald_shop::order_status::projectors(config, &group, &cli.topic_prefix, store.clone(), &properties).await.context("starting the order-status projectors")?;
    let mut bound = None;
    if let (Some(addr), Some(metrics)) = (cli.http, metrics) {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        bound = Some(listener.local_addr()?);
        println!("http: {}", listener.local_addr()?);
        let health = Projectors(projectors.iter().map(herald_projector::Projector::status).collect());
        let router = herald_ops::router(metrics, health).merge(herald_shop::order_status::http::router(store));
        let stopped = stop.clone();
        tokio::spawn(async move { herald_ops::serve_router(listener, router, async move { stopped.cancelled().await }).await });
    }
    let announced = announcement(cli, instance, bound).consumer_groups(projectors.iter().map(|p| p.group().to_owned())).register(config, &cli.registry).await;
    let mut tasks = tokio::task::JoinSet::new();
    for projector in projectors {
        let until = stop.clone();
        tasks.spawn(async move { projector.run(until.cancelled_owned()).await });
    }
    let mut failed = None;
    while let Some(ended) = tasks.join_next().await {
        let error = match ended {
            Ok(Ok(herald_projector::Stopped::Shutdown)) => continue,
            Ok(Ok(other)) => anyhow::anyhow!("projector stopped: {other:?}"),
            Ok(Err(e)) => anyhow::Error::from(e),
            Err(e) => anyhow::anyhow!("projector task: {e}"),
        };
        tracing::error!(error = %error, "order-status projector stopped");
        stop.cancel();
        failed.get_or_insert(error);
    }
    stop.cancel();
    announced.shutdown().await;
    failed.map_or(Ok(()), Err)
}

/// What this instance registers as (see `herald_services::announce`).
fn announcement(cli: &Cli, instance: &str, bound: Option<std::net::SocketAddr>) -> Announcement {
    Announcement::new(cli.role.service(), env!("CARGO_PKG_VERSION")).instance(instance).http(bound).topic_prefix(&cli.topic_prefix)
}

/// jemalloc, not glibc's malloc: measured in BENCHMARKS.md ("Aggregates: the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stop = stop_on_signal();
    let cli = Cli::parse();
    let _telemetry = herald_ops::telemetry::init(cli.role.service(), "info")?;
    let config = KafkaConfig::new(&cli.bootstrap).with_env(std::env::vars());
    let instance = cli.instance.clone().unwrap_or_else(herald_services::announce::default_instance);
    let topics: Vec<TopicSpec> = [
        herald_shop::orders::ORDERS.name(),
        herald_shop::inventory::INVENTORY.name(),
        herald_shop::inventory::STOCK_COMMANDS.name(),
        herald_shop::inventory::STOCK_REPLIES.name(),
        herald_shop::payments::PAYMENTS.name(),
        herald_shop::payments::CREDIT_COMMANDS.name(),
        herald_shop::accounts::ACCOUNT_COMMANDS.name(),
        herald_shop::accounts::ACCOUNTS.name(),
        herald_shop::accounts::ACCOUNT_REPLIES,
    ]
    .iter()
    .map(|t| TopicSpec::new(format!("{}{t}", cli.topic_prefix)).partitions(6))
    .collect();
    admin::create_topics(&config, &topics).await.context("creating the shop's topics")?;
    await_topics(&config, &topics).await?;
    if let Role::OrderStatus = cli.role {
        return order_status(&cli, &config, &instance, stop).await;
    }
    let mut settings = EngineSettings::new(instance.clone());
    settings.topic_prefix = cli.topic_prefix.clone();
    settings.commit_interval = cli.commit_interval;
    settings.commit_when_idle = cli.commit_when_idle.0;
    settings.consumer_properties.push(("session.timeout.ms".into(), cli.session_timeout.as_millis().to_string()));
    let metrics = served_metrics(&cli)?;
    let mut runner = Runner { config, settings, stop, healths: Vec::new(), groups: Vec::new(), tasks: tokio::task::JoinSet::new() };
    match cli.role {
        Role::Orders => runner.start(Orders { payment_timeout: cli.payment_timeout })?,
        Role::Inventory => {
            runner.start(Reservations)?;
            runner.start(Stock { remember: cli.remember_orders, ..Stock::new(read_map(&cli.stock)?) })?;
        }
        Role::Payments => {
            runner.start(Billing)?;
            runner.start(Credit { remember: cli.remember_orders, ..Credit::new(read_map(&cli.credit)?, cli.default_credit) })?;
        }
        Role::Accounts => runner.start(herald_aggregate::Decider(herald_shop::accounts::Accounts))?,
        Role::OrderStatus => unreachable!("handled above"),
    }
    let mut bound = None;
    if let (Some(addr), Some(metrics)) = (cli.http, metrics) {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        bound = Some(listener.local_addr()?);
        println!("http: {}", listener.local_addr()?);
        let stop = runner.stop.clone();
        tokio::spawn(herald_ops::serve(listener, metrics, Healths(runner.healths.clone()), async move { stop.cancelled().await }));
    }
    let announced = announcement(&cli, &instance, bound).consumer_groups(runner.groups.clone()).register(&runner.config, &cli.registry).await;
    // The first engine that stops for good stops the others (and the process).
    let mut failed = None;
    while let Some(ended) = runner.tasks.join_next().await {
        let error = match ended {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => anyhow::Error::from(e),
            Err(e) => anyhow::anyhow!("engine task: {e}"),
        };
        tracing::error!(error = %error, "engine stopped");
        runner.stop.cancel();
        failed.get_or_insert(error);
    }
    announced.shutdown().await;
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_participant_of_the_saga_fits_the_engine() {
        let config = KafkaConfig::new("127.0.0.1:1");
        let settings = EngineSettings::new("test");
        Engine::new(&config, Orders::default(), settings.clone()).expect("orders");
        Engine::new(&config, Reservations, settings.clone()).expect("reservations");
        Engine::new(&config, Stock::default(), settings.clone()).expect("stock");
        Engine::new(&config, Billing, settings.clone()).expect("billing");
        Engine::new(&config, Credit::default(), settings.clone()).expect("credit");
        Engine::new(&config, herald_aggregate::Decider(herald_shop::accounts::Accounts), settings).expect("accounts");
    }
}
