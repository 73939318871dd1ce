//! [`PublisherOptions`] and the producer properties Herald sets by default.

/// Producer properties Herald sets unless the configuration overrides them.
///
/// Idempotence and `acks=all` make a retried send land once; `murmur2_random` routes keys
/// to the same partitions as the Java client; `message.timeout.ms` is long so transient
/// broker trouble is retried inside librdkafka instead of failing deliveries; the queue is
/// bounded at 64 MiB instead of librdkafka's 1 GiB.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("partitioner", "murmur2_random"),
    ("message.timeout.ms", "300000"),
    ("queue.buffering.max.kbytes", "65536"),
    ("linger.ms", "5"),
    // Kafka's own default limit (the broker's `message.max.bytes`, a topic's
    // `max.message.bytes`): librdkafka's 1,000,000 refused records the broker takes, so a
    // record another client wrote near the limit could not even be dead-lettered (its
    // partition parked).
    ("message.max.bytes", "1048588"),
];

/// The largest record, in bytes, a producer made from `config` sends: its
/// `message.max.bytes`, else Herald's default ([`PRODUCER_DEFAULTS`], Kafka's own 1,048,588).
///
/// ```
/// use herald_bus::{publisher::max_message_bytes, KafkaConfig};
/// assert_eq!(max_message_bytes(&KafkaConfig::new("127.0.0.1:9092")), 1_048_588);
/// assert_eq!(max_message_bytes(&KafkaConfig::new("127.0.0.1:9092").set("message.max.bytes", "5000000")), 5_000_000);
/// ```
pub fn max_message_bytes(config: &crate::KafkaConfig) -> usize {
    let default = PRODUCER_DEFAULTS.iter().find(|(k, _)| *k == "message.max.bytes").map(|(_, v)| *v);
    config.get("message.max.bytes").or(default).and_then(|v| v.parse().ok()).unwrap_or(1_048_588)
}

/// What in `config` would break the publisher's guarantees (order per aggregate, a retried
/// send landing once, an acknowledged event surviving a leader's loss), said for people:
/// idempotence off, `acks` other than `all`, or a partitioner that ignores the key.
///
/// ```
/// use herald_bus::publisher::weakened;
/// let mut config = rdkafka::ClientConfig::new();
/// config.set("enable.idempotence", "true").set("acks", "all");
/// assert_eq!(weakened(&config), None);
/// config.set("acks", "1");
/// assert!(weakened(&config).is_some_and(|why| why.contains("acks=1")));
///
/// // A publisher is not built on such a configuration.
/// let kafka = herald_bus::KafkaConfig::new("127.0.0.1:9092").set("enable.idempotence", "false");
/// let refused = herald_bus::Publisher::new(&kafka, herald_bus::PublisherOptions::new("/doc"));
/// assert!(refused.is_err_and(|e| e.to_string().contains("enable.idempotence")));
/// ```
pub fn weakened(config: &rdkafka::ClientConfig) -> Option<String> {
    let value = |key: &str| config.get(key).map(str::to_ascii_lowercase);
    if value("enable.idempotence").as_deref() != Some("true") {
        return Some("enable.idempotence must stay true: without it a retried send can land twice and out of order".to_owned());
    }
    if let Some(acks) = value("acks").filter(|a| a != "all" && a != "-1") {
        return Some(format!("acks={acks} is refused: an acknowledged event could be lost with its partition leader (acks=all)"));
    }
    if value("partitioner").as_deref() == Some("random") {
        return Some("partitioner=random is refused: an aggregate's events would spread over partitions and lose their order".to_owned());
    }
    None
}

/// Settings of a [`Publisher`](super::Publisher).
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// The CloudEvents `source` of events this process publishes, for example `/shop/checkout`.
    pub source: String,
    /// Sends awaiting delivery at once, per publisher (default 10 000). Further sends wait.
    pub max_in_flight: usize,
}

impl PublisherOptions {
    /// Options with the given source and default limits.
    pub fn new(source: impl Into<String>) -> Self {
        PublisherOptions { source: source.into(), max_in_flight: 10_000 }
    }
}
