//! [`Backends`]: what the gateway knows about each instance its query routes ask: its
//! circuit breaker, and the verdict of its last active health check; and the task that
//! asks every backend's `/health`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_services::{Directory, Instance};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::breaker::{Breaker, BreakerConfig, State};
use crate::config::DiscoveryConfig;

/// The last active health check of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Checked {
    /// Not checked yet (or checks are off): counts as healthy.
    Unknown,
    /// `/health` answered 2xx.
    Healthy,
    /// `/health` answered something else, or nothing in time.
    Failing,
}

/// One backend: an instance of a service, by its registry key.
#[derive(Debug)]
pub struct Backend {
    /// Its circuit breaker (request outcomes).
    pub breaker: Breaker,
    checked: Mutex<Checked>,
}

impl Backend {
    /// The last health check's verdict.
    pub fn checked(&self) -> Checked {
        *self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_checked(&self, checked: Checked) {
        *self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = checked;
    }
}

/// One backend as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// The service.
    pub service: String,
    /// The instance id.
    pub instance: String,
    /// Its HTTP address.
    pub address: String,
    /// Its last health check.
    pub checked: Checked,
    /// Its circuit: `closed`, `open`, `half_open`.
    pub breaker: &'static str,
}

/// The backends of the query routes: the registry's view of them ([`Directory`]) plus the
/// gateway's own (breakers, health checks).
pub struct Backends {
    directory: Arc<Directory>,
    services: BTreeSet<String>,
    config: DiscoveryConfig,
    state: Mutex<BTreeMap<String, Arc<Backend>>>,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").field("services", &self.services).finish_non_exhaustive()
    }
}

impl Backends {
    /// Backends of `services` as `directory` lists them.
    pub fn new(directory: Arc<Directory>, services: BTreeSet<String>, config: DiscoveryConfig, http: reqwest::Client) -> Arc<Self> {
        Arc::new(Backends { directory, services, config, state: Mutex::default(), http, stop: CancellationToken::new() })
    }

    /// The discovery settings.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// The HTTP client the requests and checks use.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The live instances of `service` that serve HTTP.
    pub fn live(&self, service: &str) -> Vec<Instance> {
        self.directory.live(service).into_iter().filter(|i| !i.address.is_empty()).collect()
    }

    /// The state of the backend with registry key `key` (created closed and unchecked).
    pub fn backend(&self, key: &str) -> Arc<Backend> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state
            .entry(key.to_owned())
            .or_insert_with(|| {
                let breaker = BreakerConfig { failures: self.config.breaker_failures.max(1), open_ms: self.config.breaker_open_ms };
                Arc::new(Backend { breaker: Breaker::new(breaker), checked: Mutex::new(Checked::Unknown) })
            })
            .clone()
    }

    /// Every live backend of the query routes' services, with its state.
    pub fn report(&self) -> Vec<BackendReport> {
        let mut out = Vec::new();
        for service in &self.services {
            for instance in self.live(service) {
                let backend = self.backend(&instance.key());
                let breaker = backend.breaker.state();
                crate::metrics::backend(service, &instance.instance, backend.checked(), breaker);
                out.push(BackendReport { service: service.clone(), instance: instance.instance, address: instance.address, checked: backend.checked(), breaker: breaker.as_str() });
            }
        }
        out
    }

    /// Waits until the registry topic was read to its end (at most `timeout`).
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        self.directory.caught_up(timeout).await
    }

    /// Starts the active health checks (unless `health_interval_ms` is 0): every interval,
    /// `GET /health` of every live backend, concurrently, each within `health_timeout_ms`.
    pub fn start_checks(self: &Arc<Self>) {
        if self.config.health_interval_ms == 0 {
            return;
        }
        let backends = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(backends.config.health_interval_ms));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = backends.stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                backends.check_all().await;
            }
        });
    }

    /// One round of health checks.
    pub async fn check_all(&self) {
        let timeout = Duration::from_millis(self.config.health_timeout_ms.max(1));
        let mut checks = tokio::task::JoinSet::new();
        for service in &self.services {
            for instance in self.live(service) {
                let backend = self.backend(&instance.key());
                let request = self.http.get(format!("{}/health", instance.address)).timeout(timeout).send();
                checks.spawn(async move {
                    let verdict = match tokio::time::timeout(timeout, request).await {
                        Ok(Ok(response)) if response.status().is_success() => Checked::Healthy,
                        _ => Checked::Failing,
                    };
                    if verdict == Checked::Failing && backend.checked() != Checked::Failing {
                        tracing::warn!(backend = %instance.key(), address = %instance.address, "backend health check failing");
                    }
                    backend.set_checked(verdict);
                });
            }
        }
        while checks.join_next().await.is_some() {}
    }

    /// Stops the health checks and the directory.
    pub async fn shutdown(&self) {
        self.stop.cancel();
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// True when a backend in this breaker state may be asked at all.
pub fn admissible(state: State) -> bool {
    state != State::Open
}
