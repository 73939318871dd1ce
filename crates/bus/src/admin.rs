//! Topic administration: create event-log topics with explicit settings.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaConfig;

/// How long a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep every record forever: the topic is an event log (`retention.ms=-1`).
    Forever,
    /// Delete records older than this.
    For(Duration),
}

/// The settings of a topic to create.
///
/// ```
/// use herald_bus::admin::{Retention, TopicSpec};
/// let spec = TopicSpec::new("shop.orders").partitions(12);
/// assert_eq!((spec.replication, spec.retention), (-1, Retention::Forever), "the broker's default replication");
/// assert_eq!(spec.replication(3).replication, 3);
/// ```
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions (default 6).
    pub partitions: i32,
    /// Replication factor; default -1: the broker's `default.replication.factor` (KIP-464,
    /// Kafka 2.4+), so a topic Herald creates by itself (a dead-letter topic, say) is
    /// replicated like the cluster's others, not kept on one broker.
    pub replication: i32,
    /// Retention (default: forever, since topics are the event log).
    pub retention: Retention,
    /// Other topic configs, by Kafka's names (`min.insync.replicas`, `cleanup.policy`, ...).
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    /// An event-log topic with the defaults above.
    pub fn new(name: impl Into<String>) -> Self {
        TopicSpec { name: name.into(), partitions: 6, replication: -1, retention: Retention::Forever, configs: Vec::new() }
    }

    /// Sets the partition count.
    pub fn partitions(mut self, n: i32) -> Self {
        self.partitions = n;
        self
    }

    /// Sets the replication factor.
    pub fn replication(mut self, n: i32) -> Self {
        self.replication = n;
        self
    }

    /// Sets the retention.
    pub fn retention(mut self, r: Retention) -> Self {
        self.retention = r;
        self
    }

    /// Sets another topic config; setting a name again replaces its value (the broker
    /// refuses a request that names a config twice).
    ///
    /// ```
    /// use herald_bus::admin::TopicSpec;
    /// let spec = TopicSpec::new("t").config("segment.bytes", "1048576").config("segment.bytes", "16777216");
    /// assert_eq!(spec.configs, [("segment.bytes".to_owned(), "16777216".to_owned())]);
    /// ```
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.configs.iter_mut().find(|(name, _)| *name == key) {
            Some(entry) => entry.1 = value,
            None => self.configs.push((key, value)),
        }
        self
    }
}

/// Failure of an admin operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The topic name is not valid.
    #[error("invalid topic name: {0}")]
    InvalidName(String),
    /// The client could not be created or the request failed as a whole.
    #[error("admin request failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker refused to create a topic.
    #[error("cannot create topic {topic}: {code}")]
    Create {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}

/// Outcome of creating one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The topic was created.
    New,
    /// It existed already (its settings were not changed).
    Existed,
}

/// Creates topics; a topic that already exists is reported as [`Created::Existed`].
///
/// Cancellation-safe: dropping the future abandons the request (topics may or may not
/// have been created).
pub async fn create_topics(config: &KafkaConfig, specs: &[TopicSpec]) -> Result<Vec<Created>, AdminError> {
    for spec in specs {
        crate::topic::validate_name(&spec.name).map_err(AdminError::InvalidName)?;
    }
    let admin: AdminClient<DefaultClientContext> = config.client_config(&[]).create()?;
    let retention: Vec<String> = specs
        .iter()
        .map(|s| match s.retention {
            Retention::Forever => "-1".to_owned(),
            Retention::For(d) => d.as_millis().to_string(),
        })
        .collect();
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention)
        .map(|(s, r)| {
            let mut t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(s.replication)).set("retention.ms", r);
            for (k, v) in &s.configs {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&topics, &options).await?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(_) => Ok(Created::New),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(Created::Existed),
            Err((topic, code)) => Err(AdminError::Create { topic, code }),
        })
        .collect()
}

/// The value of one of `topic`'s configs (`max.message.bytes`, `cleanup.policy`, ...) as
/// the broker applies it, its default included; `None` when the topic does not exist.
///
/// ```no_run
/// # async fn f(config: herald_bus::KafkaConfig) -> Result<(), herald_bus::admin::AdminError> {
/// let limit = herald_bus::admin::topic_config(&config, "shop.orders", "max.message.bytes").await?;
/// # Ok(()) }
/// ```
pub async fn topic_config(config: &KafkaConfig, topic: &str, name: &str) -> Result<Option<String>, AdminError> {
    topic_configs(config, &[topic], name).await?.pop().unwrap_or(Ok(None))
}

/// [`topic_config`] of each of `topics`, in order, in one request: one answer per topic
/// (`None` for one that does not exist, an error for one the broker would not describe,
/// say for want of an ACL); an error for the request as a whole.
/// Name each topic once: librdkafka puts each answer at the first place its topic was
/// asked for.
///
/// ```no_run
/// # async fn f(config: herald_bus::KafkaConfig) -> Result<(), herald_bus::admin::AdminError> {
/// let limits = herald_bus::admin::topic_configs(&config, &["shop.orders", "shop.orders.dlq"], "max.message.bytes").await?;
/// assert_eq!(limits.len(), 2);
/// # Ok(()) }
/// ```
pub async fn topic_configs(config: &KafkaConfig, topics: &[&str], name: &str) -> Result<Vec<Result<Option<String>, AdminError>>, AdminError> {
    use rdkafka::admin::ResourceSpecifier;
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> = config.client_config(&[]).create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let resources: Vec<_> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let mut described = admin.describe_configs(&resources, &options).await?.into_iter();
    let answers = topics.iter().map(|_| match described.next() {
        Some(Ok(resource)) => Ok(resource.get(name).and_then(|entry| entry.value.clone())),
        Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) | None => Ok(None),
        Some(Err(code)) => Err(AdminError::Kafka(rdkafka::error::KafkaError::AdminOp(code))),
    });
    Ok(answers.collect())
}

/// Creates `spec` with a `max.message.bytes` `headroom` bytes above `source`'s, so every
/// record of `source` fits in it with room for more headers (a dead-letter topic, a
/// repartition topic). When `source`'s limit cannot be read, or the cluster refuses the
/// setting (a policy), `spec` is created with the broker's default, with a warning.
///
/// ```no_run
/// # async fn f(config: herald_bus::KafkaConfig) -> Result<(), herald_bus::admin::AdminError> {
/// use herald_bus::admin::{create_topic_roomier_than, TopicSpec};
/// create_topic_roomier_than(&config, TopicSpec::new("shop.orders.dlq").partitions(6), "shop.orders", 65_536).await?;
/// # Ok(()) }
/// ```
pub async fn create_topic_roomier_than(config: &KafkaConfig, spec: TopicSpec, source: &str, headroom: usize) -> Result<(), AdminError> {
    let limit = match topic_config(config, source, "max.message.bytes").await {
        Ok(limit) => limit.and_then(|v| v.parse::<usize>().ok()),
        Err(e) => {
            tracing::warn!(source, error = %e, "cannot read the topic's max.message.bytes; the topic made for it gets the broker's default");
            None
        }
    };
    let Some(limit) = limit else { return create_topics(config, &[spec]).await.map(drop) };
    let roomy = spec.clone().config("max.message.bytes", (limit + headroom).to_string());
    match create_topics(config, &[roomy]).await {
        Err(AdminError::Create { code: RDKafkaErrorCode::PolicyViolation | RDKafkaErrorCode::InvalidConfig, .. }) => {
            tracing::warn!(source, "the cluster refused a larger max.message.bytes for the topic made for it; it gets the broker's default");
            create_topics(config, &[spec]).await.map(drop)
        }
        other => other.map(drop),
    }
}

/// Number of partitions of `topic`, from cluster metadata.
pub async fn partition_count(config: &KafkaConfig, topic: &str) -> Result<Option<usize>, AdminError> {
    let topics = topic_metadata(config, Some(topic)).await?;
    Ok(topics.into_iter().find(|(t, ok)| *ok && t.name == topic).map(|(t, _)| t.partitions).filter(|n| *n > 0))
}

/// Topics from cluster metadata (one topic, or all), each with whether the broker
/// reported it without error. The client call blocks, so it runs on a blocking thread.
async fn topic_metadata(config: &KafkaConfig, topic: Option<&str>) -> Result<Vec<(TopicInfo, bool)>, AdminError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let config = config.clone();
    let topic = topic.map(str::to_owned);
    let fetched = tokio::task::spawn_blocking(move || -> Result<Vec<(TopicInfo, bool)>, AdminError> {
        let client: BaseConsumer = config.client_config(&[]).create()?;
        let metadata = client.fetch_metadata(topic.as_deref(), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| (TopicInfo { name: t.name().to_owned(), partitions: t.partitions().len() }, t.error().is_none()))
            .collect())
    })
    .await;
    fetched.unwrap_or_else(|_| Err(AdminError::Kafka(rdkafka::error::KafkaError::Canceled)))
}

/// Whether a topic exists, as far as one metadata request can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// Listed without error, with partitions.
    Exists,
    /// The broker says it does not exist (`UNKNOWN_TOPIC_OR_PARTITION`, or listed
    /// without error and without partitions).
    Missing,
    /// The broker could not say: the request failed, the topic was not listed, or it was
    /// listed with another error (a leader being elected, the topic being created). Ask
    /// again later; never treat this as missing.
    Unknown,
}

impl TopicState {
    /// The state from what the broker listed for the topic: `None` when it was not
    /// listed, else its error code (if any) and its number of partitions.
    ///
    /// ```
    /// use herald_bus::admin::TopicState;
    /// use rdkafka::types::RDKafkaErrorCode;
    ///
    /// assert_eq!(TopicState::from_listing(Some((None, 6))), TopicState::Exists);
    /// assert_eq!(TopicState::from_listing(Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), 0))), TopicState::Missing);
    /// assert_eq!(TopicState::from_listing(Some((Some(RDKafkaErrorCode::LeaderNotAvailable), 0))), TopicState::Unknown);
    /// assert_eq!(TopicState::from_listing(None), TopicState::Unknown);
    /// ```
    pub fn from_listing(listed: Option<(Option<RDKafkaErrorCode>, usize)>) -> Self {
        match listed {
            None => Self::Unknown,
            Some((None, 0)) | Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), _)) => Self::Missing,
            Some((None, _)) => Self::Exists,
            Some((Some(_), _)) => Self::Unknown,
        }
    }
}

/// Asks the broker, through a client the caller already has, whether `topic` exists.
/// Blocks for up to `timeout`: call it on a blocking thread.
///
/// ```no_run
/// use std::time::Duration;
/// use herald_bus::admin::{topic_state, TopicState};
/// use rdkafka::consumer::{BaseConsumer, Consumer};
/// use rdkafka::ClientConfig;
///
/// let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092").create()?;
/// if topic_state(consumer.client(), "shop.orders", Duration::from_secs(10)) == TopicState::Missing {
///     eprintln!("shop.orders does not exist");
/// }
/// # Ok::<(), rdkafka::error::KafkaError>(())
/// ```
pub fn topic_state<C: rdkafka::ClientContext>(client: &rdkafka::client::Client<C>, topic: &str, timeout: Duration) -> TopicState {
    match client.fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => TopicState::from_listing(
            metadata.topics().iter().find(|t| t.name() == topic).map(|t| (t.error().map(RDKafkaErrorCode::from), t.partitions().len())),
        ),
        Err(e) => {
            tracing::debug!(topic, error = %e, "metadata request failed");
            TopicState::Unknown
        }
    }
}

/// Whether `topic` is gone for sure: [`topic_state`] says [`TopicState::Missing`] on each
/// of [`GONE_ANSWERS`] answers [`GONE_PAUSE`] apart. A broker just restarted may list a
/// topic it has with no partitions for a moment; one answer is not enough to stop a
/// consumer. Blocks for seconds: call it on a blocking thread.
pub fn topic_gone<C: rdkafka::ClientContext>(client: &rdkafka::client::Client<C>, topic: &str, timeout: Duration) -> bool {
    for answer in 0..GONE_ANSWERS {
        if answer > 0 {
            std::thread::sleep(GONE_PAUSE);
        }
        if topic_state(client, topic, timeout) != TopicState::Missing {
            return false;
        }
    }
    true
}

/// How many answers [`topic_gone`] asks for.
pub const GONE_ANSWERS: u32 = 3;

/// The pause between [`topic_gone`]'s answers.
pub const GONE_PAUSE: Duration = Duration::from_secs(2);

/// A topic as listed by [`list_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: usize,
}

/// Lists the cluster's topics (internal ones, starting with `__`, excluded), sorted by name.
pub async fn list_topics(config: &KafkaConfig) -> Result<Vec<TopicInfo>, AdminError> {
    let mut topics: Vec<TopicInfo> =
        topic_metadata(config, None).await?.into_iter().map(|(t, _)| t).filter(|t| !t.name.starts_with("__")).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer stops with `TopicDeleted` only on `Missing`: these transient answers
    /// (seen while a topic is created or its leader elected) must not stop it.
    #[test]
    fn a_topic_not_listed_or_listed_with_another_error_is_unknown_not_missing() {
        assert_eq!(TopicState::from_listing(None), TopicState::Unknown);
        for code in [RDKafkaErrorCode::LeaderNotAvailable, RDKafkaErrorCode::NotLeaderForPartition, RDKafkaErrorCode::RequestTimedOut] {
            assert_eq!(TopicState::from_listing(Some((Some(code), 0))), TopicState::Unknown, "{code:?}");
            assert_eq!(TopicState::from_listing(Some((Some(code), 3))), TopicState::Unknown, "{code:?}");
        }
    }

    #[test]
    fn a_topic_is_missing_when_the_broker_says_so_and_exists_when_it_has_partitions() {
        assert_eq!(TopicState::from_listing(Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), 0))), TopicState::Missing);
        assert_eq!(TopicState::from_listing(Some((None, 0))), TopicState::Missing);
        assert_eq!(TopicState::from_listing(Some((None, 1))), TopicState::Exists);
    }
}
