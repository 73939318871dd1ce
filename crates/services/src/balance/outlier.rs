//! Outlier ejection: an instance that failed too many times in a row is skipped for a
//! cool-down, then gets traffic again.

use std::time::Duration;

use tokio::time::Instant;

/// When to eject an instance and for how long.
///
/// ```
/// use std::time::Duration;
/// use herald_services::Ejection;
/// let e = Ejection::default();
/// assert_eq!((e.consecutive_failures, e.cool_down), (5, Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Failures in a row that eject an instance (default 5; 0 disables ejection).
    pub consecutive_failures: u32,
    /// How long an ejected instance is skipped (default 30 s).
    pub cool_down: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection { consecutive_failures: 5, cool_down: Duration::from_secs(30) }
    }
}

/// Failure streak and ejection of one instance.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outlier {
    streak: u32,
    ejected_until: Option<Instant>,
}

impl Outlier {
    pub(crate) fn succeeded(&mut self) {
        self.streak = 0;
    }

    pub(crate) fn failed(&mut self, policy: Ejection, now: Instant) {
        self.streak += 1;
        if policy.consecutive_failures > 0 && self.streak >= policy.consecutive_failures {
            self.streak = 0;
            self.ejected_until = Some(now + policy.cool_down);
        }
    }

    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}
