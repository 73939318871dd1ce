//! [`Breaker`]: a circuit breaker in front of the broker, so requests fail fast while it
//! is away and the gateway finds out by itself when it is back.
//!
//! - **Closed**: every request goes to the broker. `failures` consecutive failed sends
//!   (a delivery error or the deadline passing) open it.
//! - **Open** for `open_for`: every request is refused at once (`503`, `Retry-After` = the
//!   time left).
//! - **Half open** after that: one request at a time goes through as a probe; its success
//!   closes the breaker, its failure opens it again for `open_for`. Other requests are
//!   refused meanwhile.
//!
//! The clock is tokio's, so tests run it paused.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed sends that open the breaker (default 3).
    pub failures: u32,
    /// How long it stays open before a probe, in milliseconds (default 2000).
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failures: 3, open_ms: 2000 }
    }
}

/// The breaker's state, as `/health` and the `herald_gateway_breaker_state` gauge show it
/// (0 closed, 1 open, 2 half open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests go through.
    Closed,
    /// Requests are refused until the deadline.
    Open,
    /// One probe at a time goes through.
    HalfOpen,
}

impl State {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A circuit breaker (see the module docs). Shared by reference; cheap to call.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Permission to send, from [`Breaker::admit`]. Report its outcome with
/// [`Breaker::success`] or [`Breaker::failure`]; a permit dropped without a report (the
/// request was cancelled) counts as neither, but frees the probe.
#[derive(Debug)]
#[must_use]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker { config, inner: Mutex::new(Inner::Closed { failures: 0 }) }
    }

    fn open_for(&self) -> Duration {
        Duration::from_millis(self.config.open_ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current state.
    pub fn state(&self) -> State {
        match *self.lock() {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { until } if Instant::now() < until => State::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// A permit to send, or how long to wait before asking again.
    pub fn admit(&self) -> Result<Permit<'_>, Duration> {
        let mut inner = self.lock();
        let now = Instant::now();
        let probe = match &*inner {
            Inner::Closed { .. } => false,
            Inner::Open { until } if now < *until => return Err(*until - now),
            Inner::Open { .. } | Inner::HalfOpen { probing: false } => true,
            // A probe is out: the others wait for its verdict.
            Inner::HalfOpen { probing: true } => return Err(self.open_for().min(Duration::from_secs(1))),
        };
        if probe {
            *inner = Inner::HalfOpen { probing: true };
        }
        Ok(Permit { breaker: self, probe, reported: false })
    }

    /// The permitted send succeeded: the breaker closes.
    pub fn success(&self, mut permit: Permit<'_>) {
        permit.reported = true;
        *self.lock() = Inner::Closed { failures: 0 };
    }

    /// The permitted send failed; returns how long callers should wait before retrying.
    pub fn failure(&self, mut permit: Permit<'_>) -> Duration {
        permit.reported = true;
        let mut inner = self.lock();
        let open = match &mut *inner {
            Inner::Closed { failures } => {
                *failures += 1;
                *failures >= self.config.failures
            }
            // A probe failed, or a send admitted while closed failed after it opened.
            Inner::HalfOpen { .. } => permit.probe,
            Inner::Open { .. } => false,
        };
        if open {
            *inner = Inner::Open { until: Instant::now() + self.open_for() };
        }
        match &*inner {
            Inner::Open { until } => until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
            _ => Duration::from_secs(1),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut inner = self.breaker.lock();
            if let Inner::HalfOpen { probing } = &mut *inner {
                *probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig { failures: 2, open_ms: 1000 })
    }

    fn fail(b: &Breaker) {
        if let Ok(p) = b.admit() {
            b.failure(p);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_refuses_until_the_deadline() {
        let b = breaker();
        fail(&b);
        assert_eq!(b.state(), State::Closed);
        if let Ok(p) = b.admit() {
            b.success(p);
        }
        fail(&b);
        assert_eq!(b.state(), State::Closed, "a success resets the count");
        fail(&b);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit().err(), Some(Duration::from_millis(1000)));
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(b.admit().err(), Some(Duration::from_millis(600)));
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time_then_closes_or_reopens() {
        let b = breaker();
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(b.state(), State::HalfOpen);
        let probe = b.admit();
        assert!(probe.is_ok());
        assert!(b.admit().is_err(), "a second request waits for the probe");
        if let Ok(p) = probe {
            b.failure(p);
        }
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_millis(1000)).await;
        let dropped = b.admit();
        drop(dropped);
        let probe = b.admit();
        assert!(probe.is_ok(), "a cancelled probe frees the slot");
        if let Ok(p) = probe {
            b.success(p);
        }
        assert_eq!(b.state(), State::Closed);
    }
}
