//! Input topics that gain partitions while the engine runs.
//!
//! The engine's state is partitioned as its inputs were when it started: a key's state is
//! on the changelog partition of the key's input partition. Partitions added to an input
//! move keys to other partitions (a partitioner takes the count), away from their state
//! and their one writer: decided there, a record would be decided against no state, by a
//! second writer. Kafka Streams refuses the same. So once a topic the engine reads is
//! found with another count, the engine stops with
//! [`EngineError::Partitions`](super::EngineError::Partitions), saying so, and
//! dead-letters nothing for it: the records wait in their topics.
//!
//! It is found when the consumer is assigned a partition beyond the count, when a record
//! is on another partition than its aggregate's (with the placement check on, see
//! `EngineSettings::input_partitioner`: the count is asked again, by a request that began
//! after the record arrived, before it is dead-lettered as misplaced; while the count
//! cannot be asked, the record waits), and by a check every [`WATCH_EVERY`].

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use herald_bus::{admin, KafkaConfig};
use tokio_util::sync::CancellationToken;

use super::health::EngineHealth;

/// How often the counts are asked while nothing else asks them.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(30);

/// The partition count the engine started with, and whether a topic it reads has left it.
pub(crate) struct Growth {
    config: KafkaConfig,
    topics: Vec<String>,
    partitions: u32,
    found: OnceLock<String>,
    /// Cancelled once found: the engine stops.
    stop: CancellationToken,
    health: Arc<EngineHealth>,
    /// When the last request that found the counts unchanged began. Held across a
    /// request, so callers wait for the one in flight rather than ask again.
    asked: tokio::sync::Mutex<Option<Instant>>,
}

/// What asking the partition counts found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counts {
    /// A topic has another count: the engine stops.
    Grown,
    /// Every topic has the count the engine started with.
    Unchanged,
    /// A count could not be asked (the broker away, a topic not listed): ask again later.
    Unknown,
}

impl Growth {
    /// Watches `topics`, which had `partitions` partitions when the engine started;
    /// once one has another count, cancels `stop` and makes `health` unhealthy.
    pub(crate) fn new(config: KafkaConfig, topics: Vec<String>, partitions: u32, stop: CancellationToken, health: Arc<EngineHealth>) -> Self {
        Growth { config, topics, partitions, found: OnceLock::new(), stop, health, asked: tokio::sync::Mutex::new(None) }
    }

    /// Whether `partition` is within the count the engine started with.
    pub(crate) fn within(&self, partition: i32) -> bool {
        i64::from(partition) < i64::from(self.partitions)
    }

    /// Why the engine stops, once a topic was found with another count.
    pub(crate) fn found(&self) -> Option<&str> {
        self.found.get().map(String::as_str)
    }

    fn grown(&self, topic: &str, count: String) {
        let reason = format!(
            "input topic {topic} has {count} partitions, the engine started with {}: its keys moved to other partitions than their state (on the changelog's {} partitions) and their one writer, so the engine stops rather than decide them there. Partitions cannot be taken away: move the participant to topics made with the new count, its state rebuilt from its inputs",
            self.partitions, self.partitions
        );
        if self.found.set(reason.clone()).is_ok() {
            tracing::error!(reason, "the engine stops");
            self.health.ending(reason);
            self.stop.cancel();
        }
    }

    /// True (and the engine stops) when `assigned` holds a partition beyond the count.
    pub(crate) fn assigned(&self, assigned: &[(String, i32)]) -> bool {
        let beyond = assigned.iter().filter(|(topic, _)| self.topics.contains(topic)).find(|(_, p)| !self.within(*p));
        if let Some((topic, partition)) = beyond {
            self.grown(topic, format!("at least {}", i64::from(*partition) + 1));
        }
        self.found().is_some()
    }

    /// The partition counts as a request that began after this call did finds them
    /// (Grown: the engine stops). A record placed by a grown count was produced after the
    /// partitions were added, so such a request sees them: a misplaced record that
    /// arrived before it is told right. Calls while a request is in flight wait for it
    /// and take its answer if it began after they did; so a flood of misplaced records
    /// (a producer with another partitioner) costs one request at a time, not one each.
    pub(crate) async fn check(&self) -> Counts {
        let called = Instant::now();
        let mut asked = self.asked.lock().await;
        if self.found().is_some() {
            return Counts::Grown;
        }
        if asked.is_some_and(|began| began >= called) {
            return Counts::Unchanged;
        }
        let began = Instant::now();
        for topic in &self.topics {
            match admin::partition_count(&self.config, topic).await {
                Ok(Some(n)) if n as u64 == u64::from(self.partitions) => {}
                Ok(Some(n)) => {
                    self.grown(topic, n.to_string());
                    return Counts::Grown;
                }
                Ok(None) => return Counts::Unknown,
                Err(e) => {
                    tracing::warn!(topic, error = %e, "the partition count could not be asked");
                    return Counts::Unknown;
                }
            }
        }
        *asked = Some(began);
        Counts::Unchanged
    }

    /// Checks every [`WATCH_EVERY`] until found or `done` is cancelled.
    pub(crate) async fn watch(&self, done: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_EVERY) => {}
                _ = done.cancelled() => return,
            }
            if self.check().await == Counts::Grown {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_beyond_the_count_stops_the_engine_and_says_why() {
        let stop = CancellationToken::new();
        let health = Arc::new(EngineHealth::default());
        let growth = Growth::new(KafkaConfig::new("127.0.0.1:1"), vec!["in".into(), "in.rekeyed".into()], 2, stop.clone(), health.clone());
        assert!(!growth.assigned(&[("in".into(), 0), ("in".into(), 1), ("elsewhere".into(), 5)]), "within the count, or a topic not watched");
        assert!(!stop.is_cancelled());
        assert!(growth.assigned(&[("in".into(), 1), ("in".into(), 2)]));
        assert!(stop.is_cancelled());
        let reason = growth.found().unwrap_or_default();
        assert!(reason.contains("input topic in has at least 3 partitions, the engine started with 2"), "{reason}");
        let (healthy, details) = herald_ops::HealthCheck::check(&health);
        assert!(!healthy && details["last_error"].as_str().is_some_and(|e| e.contains("at least 3 partitions")), "{details}");
    }
}
