//! Where the registry lives and how fast it notices a dead instance.

use std::time::Duration;

use crate::RegistryError;

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

    /// Checks that a registration can run with these settings: a heartbeat interval that
    /// is not zero, and a heartbeat interval and TTL that the monotonic clock can add.
    /// [`Registration::register`](crate::Registration::register) calls it first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use herald_services::Settings;
    /// assert!(Settings::default().validate().is_ok());
    /// assert!(Settings::default().heartbeat(Duration::ZERO).validate().is_err());
    /// assert!(Settings::default().heartbeat(Duration::MAX).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), RegistryError> {
        check_heartbeat(self.heartbeat)?;
        if tokio::time::Instant::now().checked_add(self.ttl).is_none() {
            return Err(RegistryError::InvalidSettings(format!("TTL {:?} is too long", self.ttl)));
        }
        Ok(())
    }
}

/// A heartbeat interval that works: not zero, and its TTL (three intervals, see
/// [`crate::announce::AnnounceArgs::settings`]) fits the monotonic clock.
pub(crate) fn check_heartbeat(every: Duration) -> Result<Duration, RegistryError> {
    if every.is_zero() {
        return Err(RegistryError::InvalidSettings("the heartbeat interval must be longer than zero".into()));
    }
    let fits = every.checked_mul(3).and_then(|ttl| tokio::time::Instant::now().checked_add(ttl)).is_some();
    if !fits {
        return Err(RegistryError::InvalidSettings(format!("heartbeat interval {every:?} is too long (its TTL, three intervals, overflows the clock)")));
    }
    Ok(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_zero_or_overflowing_heartbeat_is_refused() {
        assert!(matches!(check_heartbeat(Duration::ZERO), Err(RegistryError::InvalidSettings(_))));
        assert!(matches!(check_heartbeat(Duration::MAX / 2), Err(RegistryError::InvalidSettings(_))), "three intervals overflow");
        assert!(matches!(check_heartbeat(Duration::from_secs(u64::MAX / 4)), Err(RegistryError::InvalidSettings(_))), "the clock overflows");
        assert_eq!(check_heartbeat(Duration::from_millis(1)).ok(), Some(Duration::from_millis(1)));
        assert!(matches!(Settings::default().ttl(Duration::MAX).validate(), Err(RegistryError::InvalidSettings(_))));
    }

    #[tokio::test]
    async fn registering_with_a_zero_heartbeat_fails_before_anything_is_sent() {
        // Nothing listens here: the settings are refused before any connection.
        let config = herald_bus::KafkaConfig::new("127.0.0.1:1");
        let instance = crate::Instance::new("orders", "a", "", "1").expect("valid");
        let settings = Settings::default().heartbeat(Duration::ZERO);
        let err = crate::Registration::register(&config, &settings, instance).await.err().expect("refused");
        assert!(matches!(err, RegistryError::InvalidSettings(_)), "{err:?}");
        assert!(!err.is_retryable());
    }
}
