//! The live map behind a directory: latest record per instance, and expiry by TTL.
//!
//! Pure logic, no I/O: the clock comes in as arguments (`tokio::time::Instant` for
//! monotonic time, epoch milliseconds for the records' wall-clock heartbeats), so the TTL
//! rules are tested with tokio's paused clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::Instance;

/// Whether an instance counts as running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Its last heartbeat is within the TTL.
    Live,
    /// No heartbeat for longer than the TTL (crashed, hung, or cut off).
    Expired,
}

/// One instance as a directory sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The latest record.
    pub instance: Instance,
    /// How long ago its last heartbeat was (as this process measures it).
    pub age: Duration,
    /// Live or expired.
    pub health: Health,
}

/// Latest record per `service/instance`, with when its heartbeat was seen.
#[derive(Debug, Clone)]
pub struct Table {
    ttl: Duration,
    entries: BTreeMap<String, Known>,
}

/// The latest record of one instance, when its heartbeat counts as seen, and when the
/// record arrived (both by this process's monotonic clock).
#[derive(Debug, Clone)]
struct Known {
    instance: Instance,
    seen: Instant,
    arrived: Instant,
}

impl Table {
    /// An empty table expiring instances after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Table { ttl, entries: BTreeMap::new() }
    }

    /// Applies a record: `Some` is a registration or heartbeat, `None` a tombstone.
    ///
    /// The first record of an instance counts as seen at `now` minus its age by the
    /// record's own wall clock (`wall_now_ms - heartbeat_at_ms`, at least zero and at most
    /// the TTL): a record of a long-dead instance read when a directory starts is expired
    /// at once.
    ///
    /// After that, a heartbeat whose `heartbeat_at_ms` advanced and that arrived in real
    /// time (at least half the writer's interval after the previous record, not in a
    /// burst of backlog) counts as seen `now`, by this process's monotonic clock alone: a
    /// writer whose clock is behind this process's stays live. Any other record of a known
    /// instance counts as seen at the later of its wall-clock estimate and when the
    /// previous heartbeat counted as seen, so a dead instance's backlog never revives it.
    pub fn apply(&mut self, key: &str, record: Option<Instance>, now: Instant, wall_now_ms: i64) {
        match record {
            None => {
                self.entries.remove(key);
            }
            Some(instance) => {
                let age_ms = wall_now_ms.saturating_sub(instance.heartbeat_at_ms).max(0) as u64;
                let age = Duration::from_millis(age_ms).min(self.ttl.saturating_add(Duration::from_millis(1)));
                let by_wall_clock = now.checked_sub(age).unwrap_or(now);
                let seen = match self.entries.get(key) {
                    None => by_wall_clock,
                    Some(previous) => {
                        let advanced_ms = instance.heartbeat_at_ms.saturating_sub(previous.instance.heartbeat_at_ms);
                        let real_time = Duration::from_millis(advanced_ms.max(0) as u64 / 2);
                        if advanced_ms > 0 && now.saturating_duration_since(previous.arrived) >= real_time {
                            now
                        } else {
                            by_wall_clock.max(previous.seen)
                        }
                    }
                };
                self.entries.insert(key.to_owned(), Known { instance, seen, arrived: now });
            }
        }
    }

    /// Every instance known (live and expired), ordered by key.
    pub fn entries(&self, now: Instant) -> Vec<Entry> {
        self.entries
            .values()
            .map(|Known { instance, seen, .. }| {
                let age = now.saturating_duration_since(*seen);
                let health = if age > self.ttl { Health::Expired } else { Health::Live };
                Entry { instance: instance.clone(), age, health }
            })
            .collect()
    }

    /// The live instances of `service`, ordered by instance id.
    pub fn live(&self, service: &str, now: Instant) -> Vec<Instance> {
        self.entries(now).into_iter().filter(|e| e.health == Health::Live && e.instance.service == service).map(|e| e.instance).collect()
    }

    /// Forgets instances expired for longer than `after` (their records stay on the topic
    /// until a tombstone; this bounds the memory of a long-running directory).
    pub fn forget_expired(&mut self, now: Instant, after: Duration) {
        let limit = self.ttl.saturating_add(after);
        self.entries.retain(|_, known| now.saturating_duration_since(known.seen) <= limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, heartbeat_at_ms: i64) -> Instance {
        let mut i = Instance::new("orders", id, format!("http://{id}"), "1").expect("valid");
        i.heartbeat_at_ms = heartbeat_at_ms;
        i
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_an_instance_live_and_silence_expires_it() {
        let ttl = Duration::from_secs(3);
        let mut t = Table::new(ttl);
        let wall = 1_000_000;
        t.apply("orders/a", Some(instance("a", wall)), Instant::now(), wall);
        t.apply("orders/b", Some(instance("b", wall)), Instant::now(), wall);
        assert_eq!(t.live("orders", Instant::now()).len(), 2);
        for step in 1..=5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let w = wall + step * 1000;
            t.apply("orders/a", Some(instance("a", w)), Instant::now(), w); // only a beats
        }
        let live: Vec<String> = t.live("orders", Instant::now()).into_iter().map(|i| i.instance).collect();
        assert_eq!(live, ["a"]);
        let b = t.entries(Instant::now()).into_iter().find(|e| e.instance.instance == "b").expect("b kept");
        assert_eq!(b.health, Health::Expired);
        assert_eq!(b.age, Duration::from_secs(5));
        assert!(t.live("payments", Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_record_read_at_start_is_expired_at_once_and_a_tombstone_removes() {
        let mut t = Table::new(Duration::from_secs(3));
        t.apply("orders/old", Some(instance("old", 0)), Instant::now(), 60_000);
        t.apply("orders/new", Some(instance("new", 59_000)), Instant::now(), 60_000);
        let live: Vec<String> = t.live("orders", Instant::now()).into_iter().map(|i| i.instance).collect();
        assert_eq!(live, ["new"]);
        tokio::time::advance(Duration::from_millis(2001)).await;
        assert!(t.live("orders", Instant::now()).is_empty(), "1 s old when read + 2 s > TTL");
        t.apply("orders/new", None, Instant::now(), 62_000);
        assert_eq!(t.entries(Instant::now()).len(), 1);
        t.forget_expired(Instant::now(), Duration::ZERO);
        assert!(t.entries(Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_writer_whose_clock_is_behind_stays_live() {
        // The writer's clock is 20 s behind this process's; the TTL is 3 s.
        let ttl = Duration::from_secs(3);
        let skew = 20_000;
        let mut t = Table::new(ttl);
        let mut writer = 1_000_000;
        t.apply("orders/a", Some(instance("a", writer)), Instant::now(), writer + skew);
        assert!(t.live("orders", Instant::now()).is_empty(), "the first record is aged by the wall clocks");
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            writer += 1000;
            t.apply("orders/a", Some(instance("a", writer)), Instant::now(), writer + skew);
            assert_eq!(t.live("orders", Instant::now()).len(), 1, "each heartbeat is seen now");
        }
        // Silence still expires it, by this process's clock.
        tokio::time::advance(Duration::from_millis(3001)).await;
        assert!(t.live("orders", Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_instance_s_backlog_read_in_a_burst_does_not_revive_it() {
        let mut t = Table::new(Duration::from_secs(3));
        // Three uncompacted heartbeats of an instance dead for a minute, read at once.
        for beat in [0, 1000, 2000] {
            t.apply("orders/old", Some(instance("old", beat)), Instant::now(), 62_000);
        }
        assert!(t.live("orders", Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_instance_that_heartbeats_again_is_live_again() {
        let mut t = Table::new(Duration::from_secs(3));
        t.apply("orders/a", Some(instance("a", 0)), Instant::now(), 0);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(t.live("orders", Instant::now()).is_empty());
        t.apply("orders/a", Some(instance("a", 4000)), Instant::now(), 4000);
        assert_eq!(t.live("orders", Instant::now()).len(), 1);
    }
}
