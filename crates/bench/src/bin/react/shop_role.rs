//! One role of the reference saga, as the `shop` binary runs it, with engine settings of
//! the benchmark's choosing (pipelined, commit interval, size): `react shop-role`.

use std::collections::HashMap;
use std::time::Duration;

use herald_bus::admin::{self, TopicSpec};
use herald_bus::KafkaConfig;
use herald_choreography::engine::{Engine, EngineSettings};
use herald_choreography::Participant;
use herald_shop::saga::{Billing, Credit, Orders, Reservations, Stock};
use tokio_util::sync::CancellationToken;

/// Options of `shop-role`.
#[derive(Debug, Clone, clap::Args)]
pub struct RoleArgs {
    /// orders, inventory or payments.
    pub role: String,
    /// Kafka bootstrap servers.
    #[arg(long)]
    pub bootstrap: String,
    /// Pipelined engines.
    #[arg(long)]
    pub pipeline: bool,
    /// Commit interval in ms.
    #[arg(long, default_value_t = 100)]
    pub commit_ms: u64,
    /// Largest transaction.
    #[arg(long, default_value_t = 1000)]
    pub max_batch: usize,
    /// SKUs `SKU-0` .. seeded with ample stock.
    #[arg(long, default_value_t = 50)]
    pub skus: u64,
}

struct Runner {
    config: KafkaConfig,
    args: RoleArgs,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), herald_choreography::engine::EngineError>>>,
}

impl Runner {
    fn start<P: Participant>(&mut self, participant: P) -> anyhow::Result<()> {
        let mut settings = EngineSettings::new(format!("bench-{}", self.args.role));
        settings.pipeline = self.args.pipeline;
        settings.commit_interval = Duration::from_millis(self.args.commit_ms);
        settings.max_batch = self.args.max_batch;
        let engine = Engine::new(&self.config, participant, settings)?;
        let stop = self.stop.clone();
        self.tasks.push(tokio::spawn(engine.run(async move { stop.cancelled().await })));
        Ok(())
    }
}

/// Runs the role until SIGTERM.
pub async fn run(args: RoleArgs) -> anyhow::Result<()> {
    let config = KafkaConfig::new(&args.bootstrap);
    let topics: Vec<TopicSpec> = [
        herald_shop::orders::ORDERS.name(),
        herald_shop::inventory::INVENTORY.name(),
        herald_shop::inventory::STOCK_COMMANDS.name(),
        herald_shop::inventory::STOCK_REPLIES.name(),
        herald_shop::payments::PAYMENTS.name(),
        herald_shop::payments::CREDIT_COMMANDS.name(),
    ]
    .iter()
    .map(|t| TopicSpec::new(*t).partitions(6))
    .collect();
    admin::create_topics(&config, &topics).await?;
    let mut runner = Runner { config, args: args.clone(), stop: CancellationToken::new(), tasks: Vec::new() };
    match args.role.as_str() {
        "orders" => runner.start(Orders { payment_timeout: Duration::from_secs(30) })?,
        "inventory" => {
            runner.start(Reservations)?;
            runner.start(Stock::new((0..args.skus).map(|s| (format!("SKU-{s}"), 1_000_000_000)).collect()))?;
        }
        "payments" => {
            runner.start(Billing)?;
            runner.start(Credit::new(HashMap::new(), 1_000_000_000))?;
        }
        other => anyhow::bail!("unknown role {other}"),
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = runner.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    for task in runner.tasks {
        task.await??;
    }
    Ok(())
}
