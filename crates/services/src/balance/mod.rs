//! Client-side load balancing over a service's live instances.
//!
//! A [`Balancer`] picks one instance per request by a [`Strategy`] and hands it out as a
//! [`Lease`]: the lease counts as in flight until dropped (what least-outstanding balancing
//! reads), and the caller reports the outcome with [`Lease::succeeded`] or
//! [`Lease::failed`] (what outlier ejection reads). Clones of a balancer share their state.
//!
//! Ejected instances are skipped while others remain; when every instance is ejected the
//! balancer picks among all of them rather than fail (trying a maybe-broken instance beats
//! refusing every request).
//!
//! Layout: [`ring`] (consistent hashing), [`outlier`] (ejection policy).

pub mod outlier;
pub mod ring;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::Instance;
use outlier::{Ejection, Outlier};
use ring::Ring;

/// How a balancer chooses among live instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Each instance in turn.
    RoundRobin,
    /// The instance with the fewest leases in flight (ties in turn).
    LeastOutstanding,
    /// The instance owning the request's key on a hash ring, so one key's requests hit one
    /// instance while it lives; without a key, round robin.
    ConsistentHash,
}

#[derive(Debug, Default)]
struct State {
    next: usize,
    ring: Ring,
    outliers: HashMap<String, Outlier>,
    in_flight: HashMap<String, Arc<AtomicUsize>>,
}

/// Picks instances for requests. Cheap to clone; clones share counters and ejections.
///
/// ```
/// use herald_services::{Balancer, Instance, Strategy};
/// let instances = vec![
///     Instance::new("orders", "a", "http://a", "1")?,
///     Instance::new("orders", "b", "http://b", "1")?,
/// ];
/// let balancer = Balancer::new(Strategy::RoundRobin);
/// let first = balancer.pick(&instances, None).expect("instances");
/// let second = balancer.pick(&instances, None).expect("instances");
/// assert_ne!(first.instance().instance, second.instance().instance);
/// first.succeeded();
/// second.failed();
/// # Ok::<(), herald_services::RegistryError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Balancer {
    strategy: Strategy,
    ejection: Ejection,
    state: Arc<Mutex<State>>,
}

impl Balancer {
    /// A balancer with the default [`Ejection`] policy.
    pub fn new(strategy: Strategy) -> Self {
        Balancer { strategy, ejection: Ejection::default(), state: Arc::default() }
    }

    /// Sets the outlier ejection policy.
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Picks one of `instances` (the live instances of one service, as
    /// [`crate::Directory::live`] returns them) for a request with `key`; `None` when
    /// `instances` is empty.
    pub fn pick(&self, instances: &[Instance], key: Option<&[u8]>) -> Option<Lease> {
        if instances.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut state = self.state();
        let ejected = |s: &State, i: &Instance| s.outliers.get(&i.key()).is_some_and(|o| o.is_ejected(now));
        let mut candidates: Vec<usize> = (0..instances.len()).filter(|&i| !ejected(&state, &instances[i])).collect();
        if candidates.is_empty() {
            candidates = (0..instances.len()).collect();
        }
        let chosen = match (self.strategy, key) {
            (Strategy::ConsistentHash, Some(key)) => {
                let keys: Vec<String> = instances.iter().map(Instance::key).collect();
                if state.ring.members() != keys.as_slice() {
                    state.ring = Ring::new(&keys);
                }
                let order = state.ring.walk(key);
                order.iter().copied().find(|i| candidates.contains(i)).unwrap_or(order[0])
            }
            (Strategy::LeastOutstanding, _) => {
                let load = |s: &State, i: usize| s.in_flight.get(&instances[i].key()).map_or(0, |c| c.load(Ordering::Relaxed));
                let least = candidates.iter().map(|&i| load(&state, i)).min().unwrap_or(0);
                let tied: Vec<usize> = candidates.iter().copied().filter(|&i| load(&state, i) == least).collect();
                let n = state.next;
                state.next = n.wrapping_add(1);
                tied[n % tied.len()]
            }
            _ => {
                let n = state.next;
                state.next = n.wrapping_add(1);
                candidates[n % candidates.len()]
            }
        };
        let instance = instances[chosen].clone();
        let counter = state.in_flight.entry(instance.key()).or_default().clone();
        counter.fetch_add(1, Ordering::Relaxed);
        Some(Lease { instance, counter, balancer: self.clone() })
    }

    /// Leases of the instance with this key (`service/instance`) now in flight.
    pub fn in_flight(&self, key: &str) -> usize {
        self.state().in_flight.get(key).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// True while the instance with this key is ejected.
    pub fn is_ejected(&self, key: &str) -> bool {
        self.state().outliers.get(key).is_some_and(|o| o.is_ejected(Instant::now()))
    }
}

/// One request's use of an instance. In flight until dropped; report how it went with
/// [`Lease::succeeded`] or [`Lease::failed`] (dropping it without a report counts as
/// neither).
#[derive(Debug)]
pub struct Lease {
    instance: Instance,
    counter: Arc<AtomicUsize>,
    balancer: Balancer,
}

impl Lease {
    /// The instance to send the request to.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The request succeeded: the instance's failure streak ends.
    pub fn succeeded(self) {
        self.balancer.state().outliers.entry(self.instance.key()).or_default().succeeded();
    }

    /// The request failed (error, timeout, 5xx): counts toward ejection.
    pub fn failed(self) {
        let policy = self.balancer.ejection;
        self.balancer.state().outliers.entry(self.instance.key()).or_default().failed(policy, Instant::now());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
