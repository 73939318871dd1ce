//! Input partitions held by a transaction that does not end.
//!
//! The engine reads its inputs `read_committed`: it sees nothing of a partition past its
//! last stable offset, the first offset of a transaction still open there. A transaction
//! whose coordinator finished it without writing its marker to the partition (see
//! `restore`: a partition leaderless when the markers were sent, as in a broker's crash or
//! controlled shutdown) stays open on it for good, and the engine waits for ever with
//! nothing to show. `restore` catches that on the changelog; this watches the input
//! partitions the engine owns: every [`CHECK_EVERY`] it asks each one's last stable offset
//! and high watermark (two clients kept for the engine's life), and a partition whose last
//! stable offset stayed below its high watermark, without moving, for
//! [`EngineSettings::hanging_input_after`](super::EngineSettings::hanging_input_after) is
//! reported: `/health` unhealthy with the partitions and what an operator does
//! (`kafka-transactions.sh find-hanging`, then `abort`; see the engine's docs on hanging
//! transactions), and an error log. It clears by itself once the offset moves.
//!
//! Not watched: the repartitioner's own inputs, and `__consumer_offsets` (a pending
//! transactional offset commit holds a `read_committed` member's offset fetch):
//! `find-hanging` lists those too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_bus::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use super::health::EngineHealth;

/// How often the owned input partitions are asked.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The input partitions the coordinator owns, as it last published them.
pub(crate) type Owned = Arc<Mutex<HashSet<(String, i32)>>>;

/// Where a partition's last stable offset stands below its high watermark, and since when.
type Stuck = HashMap<(String, i32), (i64, Instant)>;

/// Watches the partitions in `owned` until `stop`; reports to `health` those whose last
/// stable offset has not moved for `after` while below the high watermark.
pub(crate) async fn watch(config: KafkaConfig, owned: Owned, after: Duration, health: Arc<EngineHealth>, stop: CancellationToken) {
    let clients = match clients(&config) {
        Ok(clients) => Arc::new(clients),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the inputs for hanging transactions");
            return;
        }
    };
    let mut stuck = Stuck::new();
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let partitions: Vec<(String, i32)> = owned.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let asking = clients.clone();
        let Ok(offsets) = tokio::task::spawn_blocking(move || offsets(&asking, &partitions)).await else { continue };
        let hanging = update(&mut stuck, offsets, Instant::now(), after);
        health.set_hanging(reason(&hanging, after));
    }
}

/// A `read_committed` client (its high watermark is the last stable offset) and a
/// `read_uncommitted` one.
fn clients(config: &KafkaConfig) -> Result<(BaseConsumer, BaseConsumer), rdkafka::error::KafkaError> {
    let client = |isolation: &str| config.client_config(&[]).set("group.id", "herald-hanging-watch").set("enable.auto.commit", "false").set("isolation.level", isolation).create::<BaseConsumer>();
    Ok((client("read_committed")?, client("read_uncommitted")?))
}

/// Each partition's (last stable offset, high watermark); those the broker did not answer
/// for are left out.
fn offsets((committed, uncommitted): &(BaseConsumer, BaseConsumer), partitions: &[(String, i32)]) -> Vec<((String, i32), i64, i64)> {
    let timeout = Duration::from_secs(5);
    partitions
        .iter()
        .filter_map(|(topic, partition)| {
            let (_, stable) = committed.fetch_watermarks(topic, *partition, timeout).ok()?;
            let (_, high) = uncommitted.fetch_watermarks(topic, *partition, timeout).ok()?;
            Some(((topic.clone(), *partition), stable, high))
        })
        .collect()
}

/// Records `offsets` asked at `now` in `stuck`; returns the partitions stuck for `after`,
/// sorted. A partition not in `offsets` (not owned any more, or not answered for) is
/// forgotten.
fn update(stuck: &mut Stuck, offsets: Vec<((String, i32), i64, i64)>, now: Instant, after: Duration) -> Vec<(String, i32, i64, i64)> {
    let asked: HashSet<(String, i32)> = offsets.iter().map(|(p, _, _)| p.clone()).collect();
    stuck.retain(|p, _| asked.contains(p));
    let mut hanging = Vec::new();
    for (partition, stable, high) in offsets {
        if stable >= high {
            stuck.remove(&partition);
            continue;
        }
        let entry = stuck.entry(partition.clone()).or_insert((stable, now));
        if entry.0 != stable {
            *entry = (stable, now);
        }
        if now.duration_since(entry.1) >= after {
            hanging.push((partition.0, partition.1, stable, high));
        }
    }
    hanging.sort();
    hanging
}

/// What `/health` says of `hanging`, if anything.
fn reason(hanging: &[(String, i32, i64, i64)], after: Duration) -> Option<String> {
    if hanging.is_empty() {
        return None;
    }
    let partitions: Vec<String> = hanging.iter().map(|(t, p, stable, high)| format!("{t}/{p} (last stable offset {stable}, high watermark {high})")).collect();
    Some(format!(
        "a transaction has held input partition(s) {} for over {after:?}: the engine waits for it. If its producer is gone (past its transaction.timeout.ms), it is a hanging transaction that only an operator can end: kafka-transactions.sh find-hanging, then abort each partition it lists, this engine's changelog and __consumer_offsets last (see the engine's docs on hanging transactions)",
        partitions.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stable: i64, high: i64) -> Vec<((String, i32), i64, i64)> {
        vec![(("in".to_owned(), 0), stable, high)]
    }

    #[test]
    fn a_partition_is_hanging_once_its_stable_offset_stayed_below_the_high_watermark_long_enough() {
        let (mut stuck, start, after) = (Stuck::new(), Instant::now(), Duration::from_secs(30));
        assert!(update(&mut stuck, at(5, 9), start, after).is_empty(), "open, but not for long");
        assert!(update(&mut stuck, at(5, 12), start + Duration::from_secs(29), after).is_empty());
        assert_eq!(update(&mut stuck, at(5, 12), start + Duration::from_secs(30), after), [("in".to_owned(), 0, 5, 12)]);
        assert!(reason(&update(&mut stuck, at(5, 12), start + Duration::from_secs(31), after), after).is_some_and(|r| r.contains("in/0") && r.contains("find-hanging")));
    }

    #[test]
    fn a_stable_offset_that_moves_or_catches_up_starts_over() {
        let (mut stuck, start, after) = (Stuck::new(), Instant::now(), Duration::from_secs(30));
        update(&mut stuck, at(5, 9), start, after);
        assert!(update(&mut stuck, at(7, 9), start + Duration::from_secs(40), after).is_empty(), "moved: a live transaction after another");
        assert!(update(&mut stuck, at(9, 9), start + Duration::from_secs(80), after).is_empty());
        assert!(stuck.is_empty());
        update(&mut stuck, at(9, 10), start + Duration::from_secs(81), after);
        assert!(update(&mut stuck, vec![], start + Duration::from_secs(200), after).is_empty());
        assert!(stuck.is_empty(), "a partition no longer owned is forgotten");
    }
}
