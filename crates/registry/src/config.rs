//! Where the registry is and how patiently to talk to it.

use std::time::Duration;

/// Settings of a [`Registry`](crate::Registry) client.
///
/// Defaults: a 5 s timeout per HTTP request, and transient failures (5xx, 429, timeouts,
/// refused connections) retried [`Backoff::default`]: 4 attempts, 100 ms doubling up to
/// 1 s. `Debug` never prints the password, neither the one given with
/// [`RegistryConfig::basic_auth`] nor one in the URL (`https://key:secret@host`).
///
/// `https://` URLs are spoken with rustls, trusting the system's root certificates and,
/// for a registry whose certificate a private CA signed, the CAs given with
/// [`RegistryConfig::ca_pem`] or [`RegistryConfig::ca_file`].
///
/// ```
/// use std::time::Duration;
/// use herald_registry::{Backoff, RegistryConfig};
/// let config = RegistryConfig::new("http://127.0.0.1:8081")
///     .timeout(Duration::from_secs(2))
///     .backoff(Backoff { attempts: 6, ..Backoff::default() })
///     .basic_auth("herald", "s3cret");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// let in_url = RegistryConfig::new("https://key:s3cret@registry.example");
/// assert!(!format!("{in_url:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct RegistryConfig {
    pub(crate) url: String,
    pub(crate) timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) auth: Option<(String, String)>,
    /// Extra trusted CA certificates, PEM.
    pub(crate) ca_pem: Vec<Vec<u8>>,
}

impl RegistryConfig {
    /// A registry at `url`, the base of its Confluent-compatible API: for Confluent Schema
    /// Registry `http://host:8081`, for Apicurio Registry `http://host:8080/apis/ccompat/v7`.
    pub fn new(url: impl Into<String>) -> Self {
        RegistryConfig {
            url: url.into().trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            auth: None,
            ca_pem: Vec::new(),
        }
    }

    /// Timeout of one HTTP request (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How transient failures are retried inside the client.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// HTTP basic authentication (Confluent Cloud: API key and secret).
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Trusts the CA certificate(s) in `pem` (one or more `BEGIN CERTIFICATE` blocks) for
    /// `https://` registries, besides the system's roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem.push(pem.into());
        self
    }

    /// Trusts the CA certificate(s) in the PEM file at `path` ([`RegistryConfig::ca_pem`]).
    pub fn ca_file(self, path: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let pem = std::fs::read(path)?;
        Ok(self.ca_pem(pem))
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("auth", &self.auth.as_ref().map(|(user, _)| format!("{user}:<redacted>")))
            .field("extra_cas", &self.ca_pem.len())
            .finish()
    }
}

/// `url` with the password of its userinfo (`scheme://user:password@host`) replaced by
/// `<redacted>`; the user name stays, so an operator can tell which credential is used.
/// A URL with a mistyped scheme separator (`http:/user:pw@host`, `http:user:pw@host`) is
/// redacted the same way.
pub(crate) fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    match herald_bus::redact::url_password(url, &['/', '?', '#']) {
        Some(password) => format!("{}<redacted>{}", &url[..password.start], &url[password.end..]).into(),
        None => url.into(),
    }
}

/// Bounded exponential backoff for transient registry failures.
///
/// ```
/// use std::time::Duration;
/// use herald_registry::Backoff;
/// let b = Backoff::default();
/// assert_eq!(b.delay(1), Duration::from_millis(100));
/// assert_eq!(b.delay(2), Duration::from_millis(200));
/// assert_eq!(b.delay(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included (at least 1). Default 4.
    pub attempts: u32,
    /// Wait after the first failure. Default 100 ms.
    pub initial: Duration,
    /// Longest wait between attempts. Default 1 s.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { attempts: 4, initial: Duration::from_millis(100), max: Duration::from_secs(1) }
    }
}

impl Backoff {
    /// No retries: one attempt.
    pub const NONE: Backoff = Backoff { attempts: 1, initial: Duration::ZERO, max: Duration::ZERO };

    /// The wait after failed attempt number `attempt` (1-based): doubling, capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_redacted() {
        assert_eq!(redact_url("https://key:s3cret@registry.example/api"), "https://key:<redacted>@registry.example/api");
        // A password holding `@` or `:` (percent-encoding is optional for some clients).
        assert_eq!(redact_url("https://key:se:cr@et@host:8081"), "https://key:<redacted>@host:8081");
        assert_eq!(redact_url("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
        assert_eq!(redact_url("https://user@host/a:b@c"), "https://user@host/a:b@c", "no password; `@` in the path is not userinfo");
        assert_eq!(redact_url("host:8081"), "host:8081");
        assert_eq!(redact_url("htp:/key:TopSecret8@127.0.0.1:8081"), "htp:/key:<redacted>@127.0.0.1:8081", "a mistyped URL too");
        // Refused at once (it was retried as an unavailable registry, its errors and
        // logs showing the URL with the password).
        let refused = crate::Registry::new(super::RegistryConfig::new("htp:/key:TopSecret8@127.0.0.1:8081")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("not an http:// or https:// URL") && !refused.contains("TopSecret8"), "{refused}");
        let debug = format!("{:?}", RegistryConfig::new("https://key:s3cret@host").basic_auth("u", "p4ss"));
        assert!(!debug.contains("s3cret") && !debug.contains("p4ss") && debug.contains("key:<redacted>@host"), "{debug}");
    }
}
