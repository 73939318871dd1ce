//! `herald services [--json]`: the registered instances of every service and their health.
//!
//! Reads the registry topic from the beginning to its end (a fresh directory), then prints
//! each service's instances: live (heartbeat within the TTL) or expired (no heartbeat for
//! longer: crashed, hung or cut off). Deregistered instances are not listed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use herald_services::{Directory, Health, Settings};
use serde::Serialize;

use crate::context::Context;
use crate::exit::{invalid, outln};

/// Arguments of `herald services`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (one document: the services with their instances) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The registry topic.
    #[arg(long, default_value = herald_services::settings::DEFAULT_TOPIC)]
    pub topic: String,
    /// An instance whose last heartbeat is older than this is shown as expired.
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub ttl_ms: u64,
    /// How long to wait for the registry topic to be read to its end.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// One instance as printed.
#[derive(Debug, Serialize)]
struct Row {
    instance: String,
    address: String,
    version: String,
    health: Health,
    started_at_ms: i64,
    heartbeat_at_ms: i64,
    /// Milliseconds since the last heartbeat, by this machine's wall clock.
    heartbeat_age_ms: i64,
}

/// One service as printed.
#[derive(Debug, Serialize)]
struct Service {
    service: String,
    live: usize,
    instances: Vec<Row>,
}

/// Runs `herald services`.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    if let Err(reason) = herald_bus::topic::validate_name(&args.topic) {
        invalid!("--topic: {reason}");
    }
    let settings = Settings::default().topic(&args.topic).ttl(Duration::from_millis(args.ttl_ms));
    let directory = Directory::start(&ctx.kafka, &settings).await.with_context(|| format!("cannot read the registry topic {}", args.topic))?;
    if !directory.caught_up(Duration::from_millis(args.timeout_ms)).await {
        anyhow::bail!("the registry topic {} was not read to its end within {} ms", args.topic, args.timeout_ms);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    for entry in directory.entries() {
        let i = entry.instance;
        let service = services.entry(i.service.clone()).or_insert_with(|| Service { service: i.service.clone(), live: 0, instances: Vec::new() });
        if entry.health == Health::Live {
            service.live += 1;
        }
        service.instances.push(Row {
            heartbeat_age_ms: now.saturating_sub(i.heartbeat_at_ms).max(0),
            instance: i.instance,
            address: i.address,
            version: i.version,
            health: entry.health,
            started_at_ms: i.started_at_ms,
            heartbeat_at_ms: i.heartbeat_at_ms,
        });
    }
    directory.shutdown().await;
    let services: Vec<Service> = services.into_values().collect();
    if args.json {
        outln!("{}", serde_json::to_string(&services)?);
        return Ok(());
    }
    if services.is_empty() {
        outln!("no services registered on {}", args.topic);
    }
    for s in &services {
        outln!("{}  ({} of {} live)", s.service, s.live, s.instances.len());
        for r in &s.instances {
            let health = match r.health {
                Health::Live => "live",
                Health::Expired => "EXPIRED",
            };
            outln!(
                "  {:24}  {:8}  {:30}  {:10}  heartbeat {} ago  up {}",
                r.instance,
                health,
                r.address,
                r.version,
                age(r.heartbeat_age_ms),
                age(now.saturating_sub(r.started_at_ms).max(0))
            );
        }
    }
    Ok(())
}

/// `950ms`, `12s`, `4m05s`, `3h12m`.
fn age(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
