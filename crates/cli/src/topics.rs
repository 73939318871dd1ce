//! `herald topics create|list`.

use std::time::Duration;

use anyhow::Context as _;
use herald_bus::admin::{self, Created, Retention, TopicSpec};

use crate::context::Context;
use crate::exit::{invalid, outln};

/// Topic commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a topic (an event log: records are kept forever unless --retention-ms).
    Create(CreateArgs),
    /// List the cluster's topics with their partition counts.
    List,
}

/// Arguments of `herald topics create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Topic name: `[a-zA-Z0-9._-]`, at most 249 characters, not mixing `.` and `_`.
    pub name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor (use 3 in production).
    #[arg(long, default_value_t = 1)]
    pub replication: i32,
    /// Delete records older than this many milliseconds (default: keep forever).
    #[arg(long, value_name = "MS")]
    pub retention_ms: Option<u64>,
}

/// Runs a topic command.
pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Create(args) => create(ctx, args).await,
        Command::List => list(ctx).await,
    }
}

async fn create(ctx: &Context, args: CreateArgs) -> anyhow::Result<()> {
    if let Err(reason) = herald_bus::topic::validate_name(&args.name) {
        invalid!("{reason}");
    }
    if args.partitions < 1 || args.replication < 1 {
        invalid!("--partitions and --replication must be at least 1");
    }
    let retention = match args.retention_ms {
        Some(ms) => Retention::For(Duration::from_millis(ms)),
        None => Retention::Forever,
    };
    let spec = TopicSpec::new(&args.name).partitions(args.partitions).replication(args.replication).retention(retention);
    let created = admin::create_topics(&ctx.kafka, &[spec]).await.with_context(|| format!("cannot create {}", args.name))?;
    match created.first() {
        Some(Created::Existed) => outln!("{} exists already (unchanged)", args.name),
        _ => outln!("created {} ({} partitions, replication {})", args.name, args.partitions, args.replication),
    }
    Ok(())
}

async fn list(ctx: &Context) -> anyhow::Result<()> {
    let topics = admin::list_topics(&ctx.kafka).await.context("cannot list topics")?;
    let width = topics.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in topics {
        outln!("{:width$}  {}", t.name, t.partitions);
    }
    Ok(())
}
