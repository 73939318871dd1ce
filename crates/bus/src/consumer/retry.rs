//! Bounded retries with exponential backoff and jitter.

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

#[cfg(test)]
mod tests {
    use super::*;

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
