//! Rate limits per principal and per route, with governor's GCRA (a token bucket without
//! a timer): `rate = { per_second = 50, burst = 100 }` on a route lets each principal send
//! `burst` requests at once and `per_second` sustained; `route_per_second` (and
//! `route_burst`) caps the route for all principals together. Beyond either, `429` with
//! `Retry-After`. Routes without `rate` are not limited.
//!
//! The principal's own bucket is checked first, so one principal flooding a route is
//! refused by its own limit before it spends the route's shared budget.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::config::ConfigError;

/// A route's `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Sustained requests per second, per principal.
    pub per_second: u32,
    /// Requests allowed at once, per principal (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Sustained requests per second on the route, all principals together (default: no
    /// route-wide limit).
    #[serde(default)]
    pub route_per_second: Option<u32>,
    /// Requests allowed at once on the route, all principals together (default:
    /// `route_per_second`).
    #[serde(default)]
    pub route_burst: Option<u32>,
}

/// One route's limiters: one bucket per principal id, and the route's own.
pub struct Limiter {
    per_principal: DefaultKeyedRateLimiter<String>,
    route: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("principals", &self.per_principal.len()).field("route_wide", &self.route.is_some()).finish()
    }
}

/// The quota of `per_second` sustained and `burst` at once (default `per_second`).
fn quota(what: &str, per_second: u32, burst: Option<u32>) -> Result<Quota, ConfigError> {
    let rate = NonZeroU32::new(per_second).ok_or_else(|| ConfigError::Invalid(format!("rate.{what}per_second must be at least 1")))?;
    let burst = NonZeroU32::new(burst.unwrap_or(per_second)).ok_or_else(|| ConfigError::Invalid(format!("rate.{what}burst must be at least 1")))?;
    Ok(Quota::per_second(rate).allow_burst(burst))
}

impl Limiter {
    /// The limiters of `rate`; zero rates, and a `route_burst` without
    /// `route_per_second`, are refused.
    pub fn new(rate: RateConfig) -> Result<Self, ConfigError> {
        let per_principal = RateLimiter::keyed(quota("", rate.per_second, rate.burst)?);
        let route = match (rate.route_per_second, rate.route_burst) {
            (Some(per_second), burst) => Some(RateLimiter::direct(quota("route_", per_second, burst)?)),
            (None, Some(_)) => return Err(ConfigError::Invalid("rate.route_burst needs rate.route_per_second".to_owned())),
            (None, None) => None,
        };
        Ok(Limiter { per_principal, route, clock: DefaultClock::default() })
    }

    /// `Ok` when `principal` may send now; otherwise how long until it may.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        // Keys are principals: their number is bounded by the configured keys and the
        // token issuer's subjects. Forget the full buckets now and then.
        if self.per_principal.len() > 10_000 {
            self.per_principal.retain_recent();
        }
        let now = self.clock.now();
        self.per_principal.check_key(&principal.to_owned()).map_err(|not_until| not_until.wait_time_from(now))?;
        match &self.route {
            Some(route) => route.check().map_err(|not_until| not_until.wait_time_from(now)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u32, burst: Option<u32>) -> RateConfig {
        RateConfig { per_second, burst, route_per_second: None, route_burst: None }
    }

    #[test]
    fn each_principal_has_its_own_burst() {
        let limiter = Limiter::new(rate(1, Some(2))).unwrap_or_else(|e| panic!("{e}"));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").err();
        assert!(wait.is_some_and(|w| w > Duration::ZERO && w <= Duration::from_secs(1)), "{wait:?}");
        assert!(limiter.check("b").is_ok(), "another principal is not limited by a's requests");
    }

    #[test]
    fn the_route_limit_is_shared_by_all_principals() {
        let limiter = Limiter::new(RateConfig { route_per_second: Some(1), route_burst: Some(3), ..rate(1, Some(2)) }).unwrap_or_else(|e| panic!("{e}"));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err(), "a's own burst is spent");
        assert!(limiter.check("b").is_ok(), "the route's third request");
        let wait = limiter.check("c").err();
        assert!(wait.is_some_and(|w| w > Duration::ZERO && w <= Duration::from_secs(1)), "the route's burst is spent for everyone: {wait:?}");
    }

    #[test]
    fn zero_rates_and_a_route_burst_alone_are_refused() {
        for bad in [rate(0, None), rate(1, Some(0)), RateConfig { route_per_second: Some(0), ..rate(1, None) }, RateConfig { route_burst: Some(5), ..rate(1, None) }] {
            assert!(Limiter::new(bad).is_err(), "{bad:?}");
        }
    }
}
