//! How a long-running Herald process registers itself: one guard for every binary.
//!
//! Every long-running process (the shop's roles and view, the saga tracker, projection
//! programs, the stream index, the outbox relay, the gateway) takes the same options ([`AnnounceArgs`]; with the `clap`
//! feature they flatten into the binary's command line) and does the same two things:
//!
//! ```no_run
//! # async fn demo(config: herald_bus::KafkaConfig, bound: std::net::SocketAddr) {
//! use herald_services::announce::{AnnounceArgs, Announcement};
//! let args = AnnounceArgs::default(); // from the command line in a binary
//! let announced = Announcement::new("order-status", env!("CARGO_PKG_VERSION"))
//!     .http(Some(bound))                       // the address its HTTP server is bound to
//!     .consumer_groups(["shop-order-status.shop.orders"])
//!     .register(&config, &args)
//!     .await;
//! // ... run until the stop signal ...
//! announced.shutdown().await;                  // tombstone: deregistered at once
//! # }
//! ```
//!
//! - **Advertised address**: `--advertise URL` if given, else `http://` + the bound address
//!   (an unspecified bound address such as `0.0.0.0` is advertised as the loopback address,
//!   with a warning: give `--advertise` when other hosts must reach it); a process without
//!   HTTP registers with an empty address (listed, never picked for requests).
//! - **Registry topic**: `--registry-topic` if given, else the process's topic prefix +
//!   [`DEFAULT_TOPIC`](crate::settings::DEFAULT_TOPIC): a prefixed copy of a pipeline has
//!   its own registry, as it has its own topics.
//! - **Opting out**: `--no-register` (or `HERALD_NO_REGISTER=true`).
//! - **Failure is not fatal**: a process whose registration cannot be made at start (the
//!   broker is away or slow) logs it, runs, and keeps trying in the background until it
//!   is registered; the registry is operational metadata, not a dependency of the work.

use std::net::SocketAddr;
use std::time::Duration;

use herald_bus::KafkaConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Instance, Registration, Settings};

/// The options every long-running Herald process takes about the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct AnnounceArgs {
    /// Do not register this process in the service registry.
    #[cfg_attr(feature = "clap", arg(long, env = "HERALD_NO_REGISTER"))]
    pub no_register: bool,
    /// The registry topic (default: the topic prefix, if the process has one, then
    /// `herald.services`).
    #[cfg_attr(feature = "clap", arg(long, env = "HERALD_REGISTRY_TOPIC", value_name = "TOPIC"))]
    pub registry_topic: Option<String>,
    /// The HTTP address other processes reach this one at (`http://host:port`); default the
    /// address its HTTP server is bound to.
    #[cfg_attr(feature = "clap", arg(long, env = "HERALD_ADVERTISE", value_name = "URL"))]
    pub advertise: Option<String>,
    /// How often the registration is renewed (`500ms`, `5s`); default 5 s. Zero, and
    /// intervals so long that the TTL (three intervals) overflows, are refused.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION", value_parser = parse_heartbeat))]
    pub registry_heartbeat: Option<Duration>,
}

impl AnnounceArgs {
    /// The registry settings these options give a process with topic prefix `prefix`.
    ///
    /// ```
    /// use herald_services::announce::AnnounceArgs;
    /// assert_eq!(AnnounceArgs::default().settings("run7.").topic, "run7.herald.services");
    /// let explicit = AnnounceArgs { registry_topic: Some("ops.services".into()), ..Default::default() };
    /// assert_eq!(explicit.settings("run7.").topic, "ops.services");
    /// ```
    pub fn settings(&self, prefix: &str) -> Settings {
        let topic = self.registry_topic.clone().unwrap_or_else(|| format!("{prefix}{}", crate::settings::DEFAULT_TOPIC));
        let mut settings = Settings::default().topic(topic);
        if let Some(every) = self.registry_heartbeat {
            // Saturating: an interval too long for the clock is refused by
            // `Settings::validate` when registering, not a panic here.
            settings = settings.heartbeat(every).ttl(every.saturating_mul(3));
        }
        settings
    }
}

/// Parses `--registry-heartbeat`: a duration ([`herald_ops::parse_duration`]) that is not
/// zero and whose TTL (three intervals) fits the clock.
///
/// ```
/// use herald_services::announce::parse_heartbeat;
/// assert_eq!(parse_heartbeat("500ms").unwrap(), std::time::Duration::from_millis(500));
/// assert!(parse_heartbeat("0ms").is_err());
/// assert!(parse_heartbeat("99999999999999999d").is_err());
/// ```
#[cfg(feature = "clap")]
pub fn parse_heartbeat(s: &str) -> Result<Duration, crate::RegistryError> {
    let every = herald_ops::parse_duration(s).map_err(crate::RegistryError::InvalidSettings)?;
    crate::settings::check_heartbeat(every)
}

/// What a process says about itself; [`Announcement::register`] puts it on the registry.
#[derive(Debug, Clone)]
#[must_use = "an announcement does nothing until registered"]
pub struct Announcement {
    service: String,
    version: String,
    instance: Option<String>,
    http: Option<SocketAddr>,
    groups: Vec<String>,
    prefix: String,
}

impl Announcement {
    /// A process of `service` running software `version`.
    pub fn new(service: impl Into<String>, version: impl Into<String>) -> Self {
        Announcement { service: service.into(), version: version.into(), instance: None, http: None, groups: Vec::new(), prefix: String::new() }
    }

    /// Its instance id (default: the host name and process id, see [`default_instance`]).
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// The address its HTTP server is bound to (`None`: it serves no HTTP).
    pub fn http(mut self, bound: Option<SocketAddr>) -> Self {
        self.http = bound;
        self
    }

    /// The consumer groups it consumes in.
    pub fn consumer_groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Its topic prefix (the registry topic is prefixed too, unless set explicitly).
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The address advertised: `args.advertise`, else `http://` + the bound address, else
    /// empty.
    ///
    /// ```
    /// use herald_services::announce::{AnnounceArgs, Announcement};
    /// let a = Announcement::new("s", "1").http(Some("0.0.0.0:8080".parse().unwrap()));
    /// assert_eq!(a.address(&AnnounceArgs::default()), "http://127.0.0.1:8080");
    /// let args = AnnounceArgs { advertise: Some("http://s.example:80/".into()), ..Default::default() };
    /// assert_eq!(a.address(&args), "http://s.example:80");
    /// assert_eq!(Announcement::new("s", "1").address(&AnnounceArgs::default()), "");
    /// ```
    pub fn address(&self, args: &AnnounceArgs) -> String {
        if let Some(url) = &args.advertise {
            return url.trim_end_matches('/').to_owned();
        }
        match self.http {
            None => String::new(),
            Some(mut addr) => {
                if addr.ip().is_unspecified() {
                    tracing::warn!(%addr, "bound to an unspecified address: advertising the loopback address; give --advertise for other hosts");
                    let loopback = if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
                    addr.set_ip(loopback);
                }
                format!("http://{addr}")
            }
        }
    }

    /// The instance record this announcement registers.
    pub fn record(&self, args: &AnnounceArgs) -> Result<Instance, crate::RegistryError> {
        let id = self.instance.clone().unwrap_or_else(default_instance);
        Ok(Instance::new(&self.service, id, self.address(args), &self.version)?.with_consumer_groups(self.groups.clone()))
    }

    /// Registers (unless `args.no_register`), with heartbeats until [`Announced::shutdown`].
    /// Never fails, and waits at most the acknowledgement timeout (10 s). A registration
    /// that cannot be made yet (the broker unreachable or slow, the registry topic not
    /// created in time) is tried again in the background, after 1 s and then at growing
    /// intervals up to [`RETRY_AT_MOST`], until it is made or the process stops: a process
    /// started while the broker is away, or busy creating topics, is registered once the
    /// broker answers instead of running unregistered for good. A record that can never be
    /// made (an invalid name) is logged and the process runs unregistered.
    pub async fn register(self, config: &KafkaConfig, args: &AnnounceArgs) -> Announced {
        if args.no_register {
            tracing::info!(service = %self.service, "not registering (--no-register)");
            return Announced::default();
        }
        let settings = args.settings(&self.prefix);
        let record = match self.record(args) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(service = %self.service, topic = %settings.topic, error = %e, "cannot register in the service registry; running unregistered");
                return Announced::default();
            }
        };
        let key = record.key();
        match attempt(config, &settings, record.clone()).await {
            Ok(registration) => {
                tracing::info!(%key, topic = %settings.topic, "registered in the service registry");
                Announced { key: Some(key), state: State::Registered(registration) }
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(%key, topic = %settings.topic, error = %e, "cannot register in the service registry yet; trying again in the background");
                let stop = CancellationToken::new();
                let retrying = tokio::spawn(retry(config.clone(), settings, record, stop.clone()));
                Announced { key: Some(key), state: State::Retrying(stop, retrying) }
            }
            Err(e) => {
                tracing::warn!(%key, topic = %settings.topic, error = %e, "cannot register in the service registry; running unregistered");
                Announced::default()
            }
        }
    }
}

/// The longest wait between two tries of a registration that could not be made.
pub const RETRY_AT_MOST: Duration = Duration::from_secs(10);

/// One try at registering, within the acknowledgement timeout (creating the registry
/// topic included, which on its own may wait longer). Dropping
/// [`Registration::register`]'s future is safe: at most one record is left, which expires.
/// The record says it was written now: a retry's record was made long before, and must not
/// look old to directories.
async fn attempt(config: &KafkaConfig, settings: &Settings, mut record: Instance) -> Result<Registration, crate::RegistryError> {
    record.heartbeat_at_ms = crate::instance::now_ms();
    match tokio::time::timeout(settings.ack_timeout, Registration::register(config, settings, record)).await {
        Ok(registered) => registered,
        Err(_) => Err(crate::RegistryError::Timeout(settings.ack_timeout)),
    }
}

/// Tries again until registered (then the registration), refused for good, or `stop`.
async fn retry(config: KafkaConfig, settings: Settings, record: Instance, stop: CancellationToken) -> Option<Registration> {
    let key = record.key();
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        // Not raced with `stop`: an attempt cut short may still leave its record, with no
        // tombstone after it. It ends within the acknowledgement timeout; a registration
        // made as the process stops is handed to `shutdown`, which deregisters it.
        match attempt(&config, &settings, record.clone()).await {
            Ok(registration) => {
                tracing::info!(%key, topic = %settings.topic, "registered in the service registry");
                return Some(registration);
            }
            Err(e) if e.is_retryable() => {
                wait = (wait * 2).min(RETRY_AT_MOST);
                tracing::warn!(%key, topic = %settings.topic, error = %e, "cannot register in the service registry yet; trying again in {wait:?}");
            }
            Err(e) => {
                tracing::warn!(%key, topic = %settings.topic, error = %e, "cannot register in the service registry; running unregistered");
                return None;
            }
        }
    }
}

/// A registered process (or one being registered in the background, or one that runs
/// unregistered). Call [`Announced::shutdown`] on an orderly stop; dropping it stops the
/// heartbeats (and the tries) without a tombstone, as a crash would.
#[derive(Default)]
pub struct Announced {
    key: Option<String>,
    state: State,
}

/// Where an announcement stands.
#[derive(Default)]
enum State {
    /// Not registering (or refused for good).
    #[default]
    Unregistered,
    Registered(Registration),
    /// The background tries of a registration that could not be made at once.
    Retrying(CancellationToken, JoinHandle<Option<Registration>>),
}

impl std::fmt::Debug for Announced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announced").field("key", &self.key()).field("trying_in_the_background", &matches!(self.state, State::Retrying(..))).finish()
    }
}

impl Announced {
    /// The record key (`service/instance`) it registers under; `None` when it does not
    /// register.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Stops the background tries, if any (waiting for one under way, at most the
    /// acknowledgement timeout), and deregisters with a tombstone (a failure is logged: the
    /// instance then expires after the TTL).
    pub async fn shutdown(mut self) {
        let registration = match std::mem::take(&mut self.state) {
            State::Registered(registration) => Some(registration),
            State::Retrying(stop, retrying) => {
                stop.cancel();
                retrying.await.ok().flatten()
            }
            State::Unregistered => None,
        };
        if let Some(registration) = registration {
            let key = registration.key().to_owned();
            match registration.shutdown().await {
                Ok(()) => tracing::info!(%key, "deregistered from the service registry"),
                Err(e) => tracing::warn!(%key, error = %e, "cannot deregister; the instance expires after the TTL"),
            }
        }
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        if let State::Retrying(stop, _) = &self.state {
            stop.cancel();
        }
    }
}

/// The default instance id: the host name (`HOSTNAME`, else `/etc/hostname`) and the
/// process id, `host-1234`.
pub fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_heartbeat_gives_settings_without_a_panic() {
        let args = AnnounceArgs { registry_heartbeat: Some(Duration::MAX), ..Default::default() };
        let settings = args.settings("");
        assert_eq!(settings.ttl, Duration::MAX);
        assert!(settings.validate().is_err());
    }

    #[cfg(feature = "clap")]
    #[test]
    fn the_heartbeat_option_refuses_zero_and_overflow() {
        assert_eq!(parse_heartbeat("500ms").ok(), Some(Duration::from_millis(500)));
        for bad in ["0ms", "0s", "99999999999999999d", "soon"] {
            assert!(matches!(parse_heartbeat(bad), Err(crate::RegistryError::InvalidSettings(_))), "{bad}");
        }
    }
}
