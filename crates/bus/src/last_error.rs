//! A client's or a runtime's most recent error, and when it happened.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most recent error (a failed SASL authentication, a TLS handshake, a broker that
/// cannot be reached, a failed transaction) and when it happened.
///
/// librdkafka reports client errors only to the context and keeps retrying, so a record's
/// delivery later fails with nothing but "Message timed out": the publisher attaches the
/// last error to that failure ([`LastError::since`]). Health checks show it with its age
/// ([`LastError::get`]), so an operator can tell an error of a minute ago, since recovered
/// from, from one that is happening now.
///
/// ```
/// use herald_bus::last_error::LastError;
///
/// let last = LastError::default();
/// assert_eq!(last.get(), None);
/// last.set("all brokers down".to_owned());
/// let (message, age) = last.get().expect("set");
/// assert_eq!(message, "all brokers down");
/// assert!(age < std::time::Duration::from_secs(60));
/// ```
#[derive(Debug, Default)]
pub struct LastError(Mutex<Option<(Instant, String)>>);

impl LastError {
    /// Records `message` as the last error, as of now.
    pub fn set(&self, message: String) {
        *self.lock() = Some((Instant::now(), message));
    }

    /// The last error and how long ago it happened, if there was one.
    pub fn get(&self) -> Option<(String, Duration)> {
        self.lock().as_ref().map(|(at, message)| (message.clone(), at.elapsed()))
    }

    /// The last error if it happened after `since`.
    pub fn since(&self, since: Instant) -> Option<String> {
        self.lock().as_ref().filter(|(at, _)| *at >= since).map(|(_, m)| m.clone())
    }

    /// The last error as health checks show it: `{"last_error": message or null,
    /// "last_error_seconds_ago": whole seconds or null}`, merged into `details`.
    pub fn show_in(&self, details: &mut serde_json::Value) {
        let last = self.get();
        details["last_error"] = last.as_ref().map(|(message, _)| message.clone()).into();
        details["last_error_seconds_ago"] = last.map(|(_, age)| age.as_secs()).into();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_show_the_error_with_its_age_or_nulls() {
        let last = LastError::default();
        let mut details = serde_json::json!({"running": true});
        last.show_in(&mut details);
        assert_eq!(details, serde_json::json!({"running": true, "last_error": null, "last_error_seconds_ago": null}));
        last.set("broker down".to_owned());
        last.show_in(&mut details);
        assert_eq!(details["last_error"], "broker down");
        assert!(details["last_error_seconds_ago"].as_u64().is_some_and(|s| s < 60), "{details}");
        assert_eq!(last.since(Instant::now() + Duration::from_secs(1)), None);
    }
}
