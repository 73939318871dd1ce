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
    entries: BTreeMap<String, (Instance, Instant)>,
}

impl Table {
    /// An empty table expiring instances after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Table { ttl, entries: BTreeMap::new() }
    }

    /// Applies a record: `Some` is a registration or heartbeat, `None` a tombstone.
    ///
    /// The heartbeat counts as seen at `now` minus its age by the record's own wall clock
    /// (`wall_now_ms - heartbeat_at_ms`, at least zero and at most the TTL): a record of a
    /// long-dead instance read when a directory starts is expired at once, while a fresh
    /// heartbeat is timed by this process's monotonic clock, so small clock skew between
    /// hosts only shifts expiry, never revives a dead instance for more than a TTL.
    pub fn apply(&mut self, key: &str, record: Option<Instance>, now: Instant, wall_now_ms: i64) {
        match record {
            None => {
                self.entries.remove(key);
            }
            Some(instance) => {
                let age_ms = wall_now_ms.saturating_sub(instance.heartbeat_at_ms).max(0) as u64;
                let age = Duration::from_millis(age_ms).min(self.ttl + Duration::from_millis(1));
                let seen = now.checked_sub(age).unwrap_or(now);
                self.entries.insert(key.to_owned(), (instance, seen));
            }
        }
    }

    /// Every instance known (live and expired), ordered by key.
    pub fn entries(&self, now: Instant) -> Vec<Entry> {
        self.entries
            .values()
            .map(|(instance, seen)| {
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
        let limit = self.ttl + after;
        self.entries.retain(|_, (_, seen)| now.saturating_duration_since(*seen) <= limit);
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
    async fn an_expired_instance_that_heartbeats_again_is_live_again() {
        let mut t = Table::new(Duration::from_secs(3));
        t.apply("orders/a", Some(instance("a", 0)), Instant::now(), 0);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(t.live("orders", Instant::now()).is_empty());
        t.apply("orders/a", Some(instance("a", 4000)), Instant::now(), 4000);
        assert_eq!(t.live("orders", Instant::now()).len(), 1);
    }
}
