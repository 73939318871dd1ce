//! Where the registry lives and how fast it notices a dead instance.

use std::time::Duration;

/// The registry topic's default name.
pub const DEFAULT_TOPIC: &str = "herald.services";

/// Settings shared by registrations and directories. Both sides must agree on the topic;
/// the TTL should be a few heartbeat intervals so one lost heartbeat does not expire an
/// instance.
///
/// ```
/// use std::time::Duration;
/// use herald_services::Settings;
/// let s = Settings::default().topic("test.services").heartbeat(Duration::from_millis(200)).ttl(Duration::from_secs(1));
/// assert_eq!(s.topic, "test.services");
/// assert_eq!(Settings::default().ttl, Duration::from_secs(15));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The compacted registry topic (default [`DEFAULT_TOPIC`]); created if missing.
    pub topic: String,
    /// How often a registration re-publishes its record (default 5 s).
    pub heartbeat: Duration,
    /// How old a heartbeat may be before a directory counts the instance as expired
    /// (default 15 s).
    pub ttl: Duration,
    /// How long a registration or tombstone may wait for the broker's acknowledgement
    /// (default 10 s).
    pub ack_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { topic: DEFAULT_TOPIC.to_owned(), heartbeat: Duration::from_secs(5), ttl: Duration::from_secs(15), ack_timeout: Duration::from_secs(10) }
    }
}

impl Settings {
    /// Sets the registry topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Sets the heartbeat interval.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Sets the TTL after which an instance without heartbeats expires.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
}
