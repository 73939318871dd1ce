//! The retry layer: bounded retries with exponential backoff and jitter.
//!
//! A record a sink failed on is delivered again, alone first, after a backoff. Failures of
//! class [`Retry`](super::FailureClass::Retry) use attempts (then the record is
//! dead-lettered); [`Wait`](super::FailureClass::Wait) (something the record needs is
//! away) waits as long as it takes without using any; [`Permanent`](super::FailureClass::Permanent)
//! goes to the dead-letter layer at once.

use std::time::Duration;

/// How often and how patiently a failing handler is retried before its event is
/// dead-lettered.
///
/// Backoff before retry `n` (1-based) is `initial * multiplier^(n-1)`, capped at `max`,
/// then scaled by a random factor in `[1 - jitter, 1]` so that consumers that failed
/// together do not retry together.
///
/// ```
/// use std::time::Duration;
/// use herald_bus::RetryPolicy;
/// let policy = RetryPolicy { max_attempts: 4, initial: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0, jitter: 0.0 };
/// assert_eq!(policy.backoff(1), Duration::from_millis(100));
/// assert_eq!(policy.backoff(3), Duration::from_millis(400));
/// assert_eq!(policy.backoff(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total handler attempts per event, including the first (default 5).
    pub max_attempts: u32,
    /// Backoff before the first retry (default 100 ms).
    pub initial: Duration,
    /// Upper bound of one backoff (default 10 s).
    pub max: Duration,
    /// Growth factor per retry (default 2).
    pub multiplier: f64,
    /// Fraction of the backoff that is randomized, 0 to 1 (default 0.5).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, initial: Duration::from_millis(100), max: Duration::from_secs(10), multiplier: 2.0, jitter: 0.5 }
    }
}

impl RetryPolicy {
    /// No retries: the first failure dead-letters.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Default::default() }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.multiplier.max(1.0).powi(retry.saturating_sub(1).min(64) as i32);
        let base = self.initial.as_secs_f64() * exp;
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 { 1.0 - jitter * rand::random::<f64>() } else { 1.0 };
        Duration::from_secs_f64(capped * factor)
    }
}

/// What the worker does after a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Next {
    /// Deliver again after this wait.
    Again(Duration),
    /// Give up: dead-letter the record.
    GiveUp,
}

/// The retry decision for a record that failed with `class` on `attempt` (1-based), after
/// `waits` earlier waits of class [`Wait`](super::FailureClass::Wait) (incremented here).
pub(crate) fn next(policy: &RetryPolicy, class: super::FailureClass, attempt: u32, waits: &mut u32) -> Next {
    use super::FailureClass;
    match class {
        FailureClass::Permanent => Next::GiveUp,
        FailureClass::Wait => {
            *waits += 1;
            Next::Again(policy.backoff((*waits).min(16)))
        }
        FailureClass::Retry if attempt < policy.max_attempts.max(1) => Next::Again(policy.backoff(attempt)),
        FailureClass::Retry => Next::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::runtime::FailureClass;

    #[test]
    fn retries_use_attempts_waits_do_not_permanent_failures_give_up() {
        let policy = RetryPolicy { max_attempts: 3, jitter: 0.0, ..Default::default() };
        let mut waits = 0;
        assert_eq!(next(&policy, FailureClass::Retry, 1, &mut waits), Next::Again(Duration::from_millis(100)));
        assert_eq!(next(&policy, FailureClass::Retry, 2, &mut waits), Next::Again(Duration::from_millis(200)));
        assert_eq!(next(&policy, FailureClass::Retry, 3, &mut waits), Next::GiveUp);
        assert_eq!(next(&policy, FailureClass::Permanent, 1, &mut waits), Next::GiveUp);
        for _ in 0..100 {
            assert!(matches!(next(&policy, FailureClass::Wait, 3, &mut waits), Next::Again(_)), "waiting never gives up");
        }
        assert_eq!(waits, 100);
    }

    #[test]
    fn jittered_backoff_stays_within_bounds() {
        let policy = RetryPolicy::default();
        for retry in 1..20 {
            let full = (0.1 * 2f64.powi(retry as i32 - 1)).min(10.0);
            for _ in 0..100 {
                let b = policy.backoff(retry).as_secs_f64();
                assert!(b <= full + 1e-9 && b >= full * 0.5 - 1e-9, "retry {retry}: {b} not in [{}, {full}]", full * 0.5);
            }
        }
    }
}
