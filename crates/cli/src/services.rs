//! `herald services [--json]`: the registered instances of every service, their health,
//! and what their consumer groups are doing.
//!
//! Reads the registry topic from the beginning to its end, then prints each service's
//! instances: live (heartbeat within the TTL) or expired (no heartbeat for longer: crashed,
//! hung or cut off); deregistered instances are not listed. For the consumer groups the
//! instances recorded: the group's state, members, assigned partitions and lag, in records
//! (high watermark − committed offset) and seconds (the age of the oldest record not yet
//! consumed). One Kafka client does all of it (`herald_services::groups::Inspector`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use herald_services::groups::{GroupLag, Inspector};
use herald_services::{Health, Settings};
use serde::Serialize;

use crate::context::Context;
use crate::exit::{invalid, out};

/// Arguments of `herald services`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (one document: the services with their instances and consumer groups)
    /// instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The registry topic.
    #[arg(long, default_value = herald_services::settings::DEFAULT_TOPIC)]
    pub topic: String,
    /// An instance whose last heartbeat is older than this is shown as expired.
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub ttl_ms: u64,
    /// How long each request to the broker may take.
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
    /// The consumer groups it recorded.
    consumer_groups: Vec<String>,
}

/// One service as printed.
#[derive(Debug, Serialize)]
struct Service {
    service: String,
    live: usize,
    instances: Vec<Row>,
    /// The consumer groups of its instances, with their state and lag.
    consumer_groups: Vec<GroupLag>,
}

/// Runs `herald services`.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    if let Err(reason) = herald_bus::topic::validate_name(&args.topic) {
        invalid!("--topic: {reason}");
    }
    let settings = Settings::default().topic(&args.topic).ttl(Duration::from_millis(args.ttl_ms));
    let (kafka, timeout) = (ctx.kafka.clone(), Duration::from_millis(args.timeout_ms));
    let topic = args.topic.clone();
    let (entries, lags) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let inspector = Inspector::new(&kafka, timeout).context("creating the Kafka client")?;
        let entries = inspector.registry(&settings).with_context(|| format!("cannot read the registry topic {topic}"))?;
        let groups: BTreeSet<String> = entries.iter().flat_map(|e| e.instance.consumer_groups.iter().cloned()).collect();
        let lags = inspector.inspect(&groups).context("cannot describe the consumer groups")?;
        Ok((entries, lags))
    })
    .await
    .context("the inspection task")??;
    let lags: BTreeMap<String, GroupLag> = lags.into_iter().map(|l| (l.group.clone(), l)).collect();
    let now = chrono::Utc::now().timestamp_millis();
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    for entry in entries {
        let i = entry.instance;
        let service = services.entry(i.service.clone()).or_insert_with(|| Service { service: i.service.clone(), live: 0, instances: Vec::new(), consumer_groups: Vec::new() });
        if entry.health == Health::Live {
            service.live += 1;
        }
        for group in &i.consumer_groups {
            if !service.consumer_groups.iter().any(|g| &g.group == group) {
                service.consumer_groups.extend(lags.get(group).cloned());
            }
        }
        service.instances.push(Row {
            heartbeat_age_ms: now.saturating_sub(i.heartbeat_at_ms).max(0),
            instance: i.instance,
            address: i.address,
            version: i.version,
            health: entry.health,
            started_at_ms: i.started_at_ms,
            heartbeat_at_ms: i.heartbeat_at_ms,
            consumer_groups: i.consumer_groups,
        });
    }
    let services: Vec<Service> = services.into_values().collect();
    if args.json {
        out!("{}\n", serde_json::to_string(&services)?);
        return Ok(());
    }
    out!("{}", table(&services, &args.topic, now));
    Ok(())
}

/// The human-readable listing.
fn table(services: &[Service], topic: &str, now: i64) -> String {
    let mut text = String::new();
    if services.is_empty() {
        let _ = writeln!(text, "no services registered on {topic}");
    }
    for s in services {
        let _ = writeln!(text, "{}  ({} of {} live)", s.service, s.live, s.instances.len());
        for r in &s.instances {
            let health = match r.health {
                Health::Live => "live",
                Health::Expired => "EXPIRED",
            };
            let address = if r.address.is_empty() { "(no HTTP)" } else { r.address.as_str() };
            let _ = writeln!(
                text,
                "  {:24}  {:8}  {:30}  {:10}  heartbeat {} ago  up {}",
                r.instance,
                health,
                address,
                r.version,
                age(r.heartbeat_age_ms),
                age(now.saturating_sub(r.started_at_ms).max(0))
            );
        }
        for g in &s.consumer_groups {
            let members = if g.members == 1 { "1 member".to_owned() } else { format!("{} members", g.members) };
            let _ = writeln!(
                text,
                "  group {}  {}  {}  assigned {}  lag {} records, {:.1} s",
                g.group,
                g.state,
                members,
                partitions(&g.assigned),
                g.lag_records,
                g.lag_seconds
            );
        }
    }
    text
}

/// `shop.orders[0,1,2] shop.payments[3]` from `topic-partition` names.
fn partitions(assigned: &[String]) -> String {
    if assigned.is_empty() {
        return "none".to_owned();
    }
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in assigned {
        if let Some((topic, p)) = tp.rsplit_once('-') {
            by_topic.entry(topic).or_default().push(p.parse().unwrap_or(-1));
        }
    }
    by_topic
        .into_iter()
        .map(|(t, mut ps)| {
            ps.sort_unstable();
            format!("{t}[{}]", ps.iter().map(i32::to_string).collect::<Vec<_>>().join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_partitions_are_grouped_by_topic() {
        let assigned = ["shop.orders-2", "shop.orders-0", "a.b-c-1"].map(String::from);
        assert_eq!(partitions(&assigned), "a.b-c[1] shop.orders[0,2]");
        assert_eq!(partitions(&[]), "none");
    }
}
