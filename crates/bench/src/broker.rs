//! Client settings shared by Herald and the raw baselines, unique names, topic clean-up.

use std::time::Duration;

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::consumer::CONSUMER_DEFAULTS;
use herald_bus::publisher::PRODUCER_DEFAULTS;
use herald_bus::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// Partitions of every benchmark topic.
pub const PARTITIONS: i32 = 6;

/// Connection settings given alike to Herald and to the raw clients: the bootstrap
/// address and any extra librdkafka properties (`-X key=value`).
#[derive(Debug, Clone)]
pub struct Clients {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Extra properties, applied over the defaults as Herald applies its configuration.
    pub overrides: Vec<(String, String)>,
}

impl Clients {
    /// Settings for `bootstrap` with extra properties.
    pub fn new(bootstrap: impl Into<String>, overrides: Vec<(String, String)>) -> Clients {
        Clients { bootstrap: bootstrap.into(), overrides }
    }

    /// Herald's configuration.
    pub fn herald(&self) -> KafkaConfig {
        self.overrides.iter().fold(KafkaConfig::new(&self.bootstrap), |c, (k, v)| c.set(k, v))
    }

    /// The producer configuration Herald's publisher builds: [`PRODUCER_DEFAULTS`] under
    /// the bootstrap address and the overrides, nothing else.
    pub fn raw_producer(&self) -> ClientConfig {
        self.layered(PRODUCER_DEFAULTS)
    }

    /// The consumer configuration Herald's consumer builds for `group`:
    /// [`CONSUMER_DEFAULTS`] under the bootstrap address and the overrides, then the
    /// group and `enable.auto.offset.store=false`.
    pub fn raw_consumer(&self, group: &str) -> ClientConfig {
        let mut config = self.layered(CONSUMER_DEFAULTS);
        config.set("group.id", group).set("enable.auto.offset.store", "false");
        config
    }

    fn layered(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        config.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.overrides {
            config.set(k, v);
        }
        config
    }
}

/// Names no other run uses: `herald.bench.<what>.<pid>.<n>.<random>`.
#[derive(Debug)]
pub struct Names {
    run: String,
    next: u32,
}

impl Names {
    /// Names for this process.
    pub fn new() -> Names {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Names { run: format!("{}.{}", std::process::id(), &random[..8]), next: 0 }
    }

    /// A fresh name for `what` (letters, digits and dashes).
    pub fn next(&mut self, what: &str) -> String {
        self.next += 1;
        format!("herald.bench.{what}.{}.{}", self.run, self.next)
    }
}

impl Default for Names {
    fn default() -> Self {
        Names::new()
    }
}

/// Creates a topic of [`PARTITIONS`] partitions.
pub async fn create_topic(config: &KafkaConfig, name: &str) -> Result<(), crate::Error> {
    create_topics(config, &[TopicSpec::new(name).partitions(PARTITIONS)]).await?;
    Ok(())
}

/// Deletes topics (the benchmark's own, at the end of a run). Failures are returned, not
/// fatal: the caller reports them.
pub async fn delete_topics(bootstrap: &str, names: &[String]) -> Result<(), crate::Error> {
    if names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&refs, &options).await? {
        if let Err((topic, code)) = result {
            return Err(format!("cannot delete {topic}: {code}").into());
        }
    }
    Ok(())
}
