//! `herald`: the command line of Herald.
//!
//! Manage topics, publish events written as JSON, tail a topic decoded, inspect and replay
//! dead letters, and run the demo. `herald --help` lists the commands; every command has
//! its own `--help`.
//!
//! # Layout
//! - [`context`]: the global options (`--bootstrap`, `--schemas`, `-X`) and what they build.
//! - [`topics`], [`publish`], [`command`], [`aggregate`], [`tail`], [`dlq`], [`demo`], [`saga`]: one module per command group.
//! - `herald_cli::json` (the library part): JSON ⇄ Avro values, with errors that name
//!   the field.
//! - [`record`]: a consumed record decoded for display; [`read`]: reading partitions.
//! - [`exit`]: exit codes.
//!
//! # Exit codes
//! `0` success; `1` a failure talking to Kafka or a record that was not delivered; `2` bad
//! input: a usage error, an unknown event type, or JSON that does not fit the schema.
//! `herald command`: `0` accepted, `1` rejected, `2` bad input, `3` no reply in time.
//! `herald aggregate show`: `2` also for an aggregate without events.

mod aggregate;
mod command;
mod context;
mod demo;
mod dlq;
mod exit;
mod payload;
mod projector;
mod publish;
mod read;
mod record;
mod saga;
mod services;
mod tail;
mod topics;

use clap::{Parser, Subcommand};

/// Herald: typed Avro events on Kafka, from the command line.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(flatten)]
    global: context::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and list topics.
    #[command(subcommand)]
    Topics(topics::Command),
    /// Publish events given as JSON, mapped through their Avro schema.
    Publish(publish::Args),
    /// Send a command to an aggregate and print its reply (exit 0 accepted, 1 rejected, not
    /// sent or dead-lettered, 2 bad input, 3 outcome unknown: no reply in time).
    #[command(name = "command")]
    Send(command::Args),
    /// Aggregates' event streams: show one's state and events (by the stream index, with
    /// time travel), run the stream index.
    #[command(subcommand)]
    Aggregate(aggregate::Command),
    /// Print the records of a topic, decoded.
    Tail(tail::Args),
    /// Inspect and replay dead-lettered records.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Publish a few order events and consume them back (needs only a broker).
    Demo(demo::Args),
    /// Read views: where a projection stands.
    #[command(subcommand)]
    Projector(projector::Command),
    /// Choreography: check the saga and draw it (no broker needed); track sagas, list them
    /// and show one's timeline.
    #[command(subcommand)]
    Saga(saga::Command),
    /// The service registry: each service's registered instances, live or expired.
    Services(services::Args),
    /// Versioned Avro schemas: list, fingerprint, check, compat (no broker needed).
    #[command(subcommand)]
    Schemas(herald_schema::cli::SchemasCommand),
}

/// jemalloc, not glibc's malloc: measured in BENCHMARKS.md ("Aggregates: the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logs to stderr (`RUST_LOG`, default `warn`); spans over OTLP when
    // `OTEL_EXPORTER_OTLP_ENDPOINT` is set (long-running commands: the tracker, projectors).
    let _telemetry = match herald_ops::telemetry::init("herald", "warn") {
        Ok(telemetry) => Some(telemetry),
        Err(e) => {
            eprintln!("warning: {e}");
            None
        }
    };
    let command = match cli.command {
        Command::Schemas(cmd) => return std::process::ExitCode::from(u8::try_from(cmd.run(&cli.global.schemas)).unwrap_or(2)),
        Command::Saga(cmd) => return exit::report(saga::run(cli.global, cmd).await),
        Command::Send(args) => {
            return match context::Context::new(cli.global) {
                Ok(ctx) => match command::run(&ctx, args).await {
                    Ok(code) => code,
                    Err(e) => exit::report(Err(e)),
                },
                Err(e) => exit::report(Err(e)),
            };
        }
        other => other,
    };
    let result = match context::Context::new(cli.global) {
        Ok(ctx) => match command {
            Command::Topics(cmd) => topics::run(&ctx, cmd).await,
            Command::Publish(args) => publish::run(&ctx, args).await,
            Command::Aggregate(cmd) => aggregate::run(&ctx, cmd).await,
            Command::Tail(args) => tail::run(&ctx, args).await,
            Command::Dlq(cmd) => dlq::run(&ctx, cmd).await,
            Command::Demo(args) => demo::run(&ctx, args).await,
            Command::Projector(cmd) => projector::run(&ctx, cmd).await,
            Command::Services(args) => services::run(&ctx, args).await,
            Command::Schemas(_) | Command::Saga(_) | Command::Send(_) => unreachable!("handled before"),
        },
        Err(e) => Err(e),
    };
    exit::report(result)
}

