//! `herald projector status`: where a projection stands, read from its store and the log.
//!
//! Rebuilding needs the projection's own code, so it is a flag of the binary that runs the
//! projection (for the reference one: `cargo run -p herald-projector --example order_totals
//! -- --rebuild ...`), not a command of this generic tool.

use std::fmt::Write as _;

use anyhow::Context as _;

use crate::context::Context;

/// Projector commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Per-partition position (stored with the view), end of the log and lag.
    Status(StatusArgs),
}

/// Arguments of `herald projector status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Projection name (as in its `Projection::NAME`).
    pub name: String,
    /// The view store: `sqlite:PATH` or `postgres://...`.
    #[arg(long)]
    pub store: String,
    /// The topic the projection reads.
    #[arg(long)]
    pub topic: String,
    /// View version (default: the live one).
    #[arg(long)]
    pub version: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a projector command.
pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Status(args) => status(ctx, args).await,
    }
}

async fn status(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let store = herald_projector::store::open(&args.store).with_context(|| format!("opening the store {}", args.store))?;
    let status = herald_projector::status::read(store, &ctx.kafka, &args.name, args.version, &args.topic)
        .await
        .context("reading the projection's status")?;
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    let mut out = format!(
        "{} v{} on {}: total lag {}, {} dead-lettered\n{:>9}  {:>12}  {:>12}  {:>10}  state\n",
        status.projection, status.version, status.topic, status.total_lag, status.dead_lettered_total, "partition", "position", "end", "lag"
    );
    let show = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for p in &status.partitions {
        let _ = writeln!(out, "{:>9}  {:>12}  {:>12}  {:>10}  {}", p.partition, show(p.position), show(p.end_offset), show(p.lag), p.state);
    }
    print!("{out}");
    Ok(())
}
