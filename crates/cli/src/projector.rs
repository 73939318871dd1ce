//! `herald projector status|rebuild|rollback NAME`.
//!
//! `status` reads where a projection stands from its store and the log. Rebuilding and
//! rolling back need the projection's own code, which lives in its program (built on
//! `herald_projector::app`), so the way `git` and `cargo` find their subcommands, these
//! run `herald-projection-NAME` from the `PATH` (or `--exec PATH`) with `--rebuild
//! --progress` or `--rollback` and the arguments given after the name. The program gets
//! `--bootstrap`, the `-X` properties as `HERALD_RDKAFKA_*` variables (so secrets do not
//! show in the process list), and `RUST_LOG=warn` unless `RUST_LOG` is set (so logs do
//! not scroll through the progress bar); its exit status is this command's. The program
//! also inherits `HERALD_STORE_URL`: set it (or pass `--store-file PATH`) instead of
//! `--store URL` to keep a database password out of the process list.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use herald_projector::status::StatusError;
use herald_projector::store::StoreUrl;

use crate::context::Context;
use crate::exit::{invalid, out, outln};

/// Projector commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Per-partition position (stored with the view), end of the log and lag.
    Status(StatusArgs),
    /// Rebuild the view from the beginning of the log beside the live one, swap it in once
    /// caught up (the previous version is kept), with a progress bar: runs the
    /// projection's program `herald-projection-NAME --rebuild --progress ARGS...`.
    Rebuild(ProgramArgs),
    /// Make the previous version of the view live again: runs `herald-projection-NAME
    /// --rollback ARGS...`.
    Rollback(ProgramArgs),
}

/// Arguments of `herald projector rebuild|rollback`.
#[derive(Debug, clap::Args)]
pub struct ProgramArgs {
    /// Projection name (as in its `Projection::NAME`).
    pub name: String,
    /// The projection's program (default: `herald-projection-NAME` on the `PATH`).
    #[arg(long)]
    pub exec: Option<PathBuf>,
    /// Passed to the program as they are, e.g. `--store sqlite:views.db --topic
    /// shop.orders` (see `herald_projector::app`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Arguments of `herald projector status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Projection name (as in its `Projection::NAME`).
    pub name: String,
    /// The view store: `sqlite:PATH` or `postgres://...`. A password here shows in the
    /// process list: prefer `HERALD_STORE_URL` or `--store-file`.
    #[arg(long, env = "HERALD_STORE_URL", hide_env_values = true, required_unless_present = "store_file")]
    pub store: Option<StoreUrl>,
    /// A file holding the store URL (for example a mounted secret); wins over --store.
    #[arg(long, value_name = "PATH")]
    pub store_file: Option<PathBuf>,
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
        Command::Rebuild(args) => program(ctx, args, &["--rebuild", "--progress"]).await,
        Command::Rollback(args) => program(ctx, args, &["--rollback"]).await,
    }
}

/// Runs the projection's program with `mode` and the user's arguments; fails with its
/// exit status. A SIGINT or SIGTERM is passed on to the program, and its end awaited.
async fn program(ctx: &Context, args: ProgramArgs, mode: &[&str]) -> anyhow::Result<()> {
    let exe = match args.exec {
        Some(path) => path,
        None => match find_program(&args.name) {
            Some(path) => path,
            None => invalid!(
                "no program for projection {:?}: expected `{}` on the PATH (a binary built on herald_projector::app), or give --exec PATH",
                args.name,
                program_name(&args.name)
            ),
        },
    };
    let mut command = tokio::process::Command::new(&exe);
    command.args(mode).args(&args.args).env("KAFKA_BOOTSTRAP_SERVERS", ctx.kafka.bootstrap());
    // Info logs would scroll through the progress bar; RUST_LOG, when set, still decides.
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    for (key, value) in ctx.kafka.properties().filter(|(k, _)| *k != "bootstrap.servers") {
        command.env(env_name(key), value);
    }
    let mut child = command.spawn().with_context(|| format!("running {}", exe.display()))?;
    // SIGINT or SIGTERM to this process alone (`timeout`, systemd, a CI runner) used to kill
    // it and leave the program running, to swap in the rebuild that was stopped. It is
    // passed on, and the program's answer awaited: stopped before its stop point, a
    // rebuild or time travel exits 1 saying `interrupted`, never swapped in. (Ctrl-C in a
    // terminal reaches both; the program stops on the first signal.)
    let stop = herald_ops::shutdown_signal();
    let status = tokio::select! {
        status = child.wait() => status,
        () = stop => {
            if let Some(pid) = child.id() {
                let passed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                if !passed.is_ok_and(|s| s.success()) {
                    let _ = child.start_kill();
                }
            }
            child.wait().await
        }
    }
    .with_context(|| format!("waiting for {}", exe.display()))?;
    if !status.success() {
        anyhow::bail!("{} exited with {status}", exe.display());
    }
    Ok(())
}

/// `herald-projection-NAME`.
fn program_name(projection: &str) -> String {
    format!("herald-projection-{projection}")
}

/// The projection's program on the `PATH`, if any.
fn find_program(projection: &str) -> Option<PathBuf> {
    let name = program_name(projection);
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(&name)).find(|path| path.is_file())
}

/// The variable `KafkaConfig::with_env` reads `key` from: `sasl.mechanism` ->
/// `HERALD_RDKAFKA_SASL_MECHANISM`.
fn env_name(key: &str) -> String {
    format!("{}{}", herald_bus::config::ENV_PREFIX, key.replace('.', "_").to_ascii_uppercase())
}


async fn status(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let Some(url) = StoreUrl::from_flags(args.store, args.store_file.as_deref())? else { invalid!("no store: give --store, HERALD_STORE_URL or --store-file") };
    // A mistyped SQLite path would be created, empty, by opening it.
    if let Some(path) = url.expose().strip_prefix("sqlite:").map(|p| p.trim_start_matches("//"))
        && !std::path::Path::new(path).exists()
    {
        invalid!("no SQLite store at {path}");
    }
    // Messages show the URL with its password as ***.
    let store = herald_projector::store::open(url.expose()).with_context(|| format!("opening the store {url}"))?;
    if !herald_projector::status::holds(store.clone(), &args.name).await.context("reading the store")? {
        invalid!("the store {url} holds no projection {} (no view, position or dead letter of it): has it run on this store, and are the name and the store right?", args.name);
    }
    let status = match herald_projector::status::read(store, &ctx.kafka, &args.name, args.version, &args.topic).await {
        Ok(status) => status,
        Err(e @ (StatusError::Topic(_) | StatusError::NoSuchVersion { .. })) => invalid!("{e}"),
        Err(e) => return Err(e).context("reading the projection's status"),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&status)?);
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
    out!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_travel_under_the_names_kafka_config_reads() {
        let key = "sasl.mechanism";
        let config = herald_bus::KafkaConfig::new("b:9092").with_env([(env_name(key), "PLAIN".to_owned())]);
        assert_eq!(config.get(key), Some("PLAIN"));
    }
}
