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
];

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
