//! Rate limits per principal and route, with governor's GCRA (a token bucket without a
//! timer): `rate = { per_second = 50, burst = 100 }` on a route lets each principal send
//! `burst` requests at once and `per_second` sustained; beyond that `429` with
//! `Retry-After`. Routes without `rate` are not limited.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::config::ConfigError;

/// A route's `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Sustained requests per second, per principal.
    pub per_second: u32,
    /// Requests allowed at once (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// One route's limiter, keyed by principal id.
pub struct Limiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("principals", &self.limiter.len()).finish()
    }
}

impl Limiter {
    /// The limiter of `rate`; zero rates are refused.
    pub fn new(rate: RateConfig) -> Result<Self, ConfigError> {
        let per_second = NonZeroU32::new(rate.per_second).ok_or_else(|| ConfigError::Invalid("rate.per_second must be at least 1".to_owned()))?;
        let burst = NonZeroU32::new(rate.burst.unwrap_or(rate.per_second)).ok_or_else(|| ConfigError::Invalid("rate.burst must be at least 1".to_owned()))?;
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Ok(Limiter { limiter: RateLimiter::keyed(quota), clock: DefaultClock::default() })
    }

    /// `Ok` when `principal` may send now; otherwise how long until it may.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        // Keys are principals: their number is bounded by the configured keys and the
        // token issuer's subjects. Forget the full buckets now and then.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&principal.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_has_its_own_burst() {
        let limiter = Limiter::new(RateConfig { per_second: 1, burst: Some(2) }).unwrap_or_else(|e| panic!("{e}"));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").err();
        assert!(wait.is_some_and(|w| w > Duration::ZERO && w <= Duration::from_secs(1)), "{wait:?}");
        assert!(limiter.check("b").is_ok(), "another principal is not limited by a's requests");
    }
}
