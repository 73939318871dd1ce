//! Kafka client configuration: a bootstrap address plus any librdkafka property.
//!
//! Properties use librdkafka's own names and pass through unchanged, as with kcat's
//! `-X key=value`. Herald sets safe defaults for what it relies on (idempotence, manual
//! offset storage, ...); a property you set explicitly wins, except where the guarantees
//! depend on it (those are documented on the publisher and the consumer).

use std::collections::BTreeMap;
use std::fmt;

/// Environment variable prefix mapped to librdkafka properties by [`KafkaConfig::with_env`]:
/// `HERALD_RDKAFKA_SASL_MECHANISM=SCRAM-SHA-512` sets `sasl.mechanism`. (Deliberately not
/// `HERALD_KAFKA_`, which Herald's scripts use for their own settings such as
/// `HERALD_KAFKA_HOME`.)
pub const ENV_PREFIX: &str = "HERALD_RDKAFKA_";

/// Connection settings shared by publishers, consumers and the admin helper.
///
/// `Debug` redacts secrets (any property whose name contains `password`, `secret`,
/// `jaas`, `token` or `key` in an ssl/sasl setting).
///
/// ```
/// use herald_bus::KafkaConfig;
/// let config = KafkaConfig::new("127.0.0.1:9092")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.mechanism", "SCRAM-SHA-512")
///     .set("sasl.password", "hunter2");
/// assert!(!format!("{config:?}").contains("hunter2"));
/// ```
#[derive(Clone, Default)]
pub struct KafkaConfig {
    props: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// A configuration for the cluster at `bootstrap` (`host:port[,host:port...]`).
    pub fn new(bootstrap: impl Into<String>) -> Self {
        KafkaConfig::default().set("bootstrap.servers", bootstrap)
    }

    /// Sets a librdkafka property.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.props.insert(key.into(), value.into());
        self
    }

    /// Applies `key=value` pairs (for example from `-X` flags).
    pub fn with_pairs<I, S>(mut self, pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for pair in pairs {
            let pair = pair.as_ref();
            let (k, v) = pair
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| ConfigError::Pair(pair.to_owned()))?;
            self.props.insert(k.trim().to_owned(), v.to_owned());
        }
        Ok(self)
    }

    /// Applies variables named [`ENV_PREFIX`]`PROPERTY_NAME` (underscores become dots,
    /// lower-cased). Binaries pass `std::env::vars()`; libraries never read the environment.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        for (k, v) in vars {
            if let Some(rest) = k.strip_prefix(ENV_PREFIX) {
                self.props.insert(rest.to_ascii_lowercase().replace('_', "."), v);
            }
        }
        self
    }

    /// The value of a property, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        self.get("bootstrap.servers").unwrap_or("")
    }

    /// Every property set, in name order (secrets included: never log them).
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.props.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// An rdkafka configuration with `defaults` under the user's properties, for clients
    /// Herald does not wrap.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.props {
            config.set(k, v);
        }
        config
    }
}

/// True for property names whose values must never be printed.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("jaas")
        || k.contains("token")
        || ((k.starts_with("ssl.") || k.starts_with("sasl.")) && k.contains("key") && !k.ends_with(".location"))
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.props {
            if is_secret(k) {
                map.entry(k, &"<redacted>");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

/// Invalid configuration input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `-X` pair without `=`.
    #[error("expected key=value, got {0:?}")]
    Pair(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_pairs_map_to_properties() {
        let c = KafkaConfig::new("b:1")
            .with_env([
                ("HERALD_RDKAFKA_SASL_MECHANISM".to_string(), "PLAIN".to_string()),
                ("HERALD_KAFKA_HOME".into(), "/tmp/kafka".into()),
                ("OTHER".into(), "x".into()),
            ])
            .with_pairs(["linger.ms=5"])
            .expect("valid");
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.properties().count(), 3, "only the prefixed variable, the pair and bootstrap");
        assert_eq!(c.get("linger.ms"), Some("5"));
        assert_eq!(c.bootstrap(), "b:1");
        assert!(KafkaConfig::default().with_pairs(["novalue"]).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let c = KafkaConfig::new("b:1").set("ssl.key.password", "p1").set("sasl.oauthbearer.client.secret", "p2").set("ssl.key.pem", "p3");
        let shown = format!("{c:?}");
        assert!(!shown.contains("p1") && !shown.contains("p2") && !shown.contains("p3"), "{shown}");
        assert!(shown.contains("b:1"));
    }
}
