//! How a runtime is configured: the client properties Herald sets, and [`Settings`].

use std::time::Duration;

use super::RetryPolicy;

/// Consumer properties Herald sets unless the configuration overrides them.
///
/// `enable.auto.offset.store=false` and `enable.auto.commit=true` are not negotiable:
/// Herald stores offsets itself after the work is done and lets librdkafka commit what
/// was stored (every `auto.commit.interval.ms`, and on revocation); both are forced even
/// if the configuration says otherwise.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.commit.interval.ms", "1000"),
    ("auto.offset.reset", "earliest"),
    ("isolation.level", "read_committed"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("queued.max.messages.kbytes", "16384"),
    ("enable.partition.eof", "false"),
    // A resumed partition waits for the fetch in flight; librdkafka's 500 ms default makes
    // every pause cost half a second.
    ("fetch.wait.max.ms", "100"),
    // With a full prefetch queue librdkafka waits this long before fetching again; its
    // 1 s default stalls a consumer that catches up. The queue itself stays bounded.
    ("fetch.queue.backoff.ms", "10"),
];

/// How a [`Runtime`](super::Runtime) runs (the consumer builders fill it in).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Consumer group.
    pub group: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Bytes of records buffered ahead of the sinks, across all partitions.
    pub max_buffered_bytes: usize,
    /// How long shutdown waits for queued records.
    pub drain_timeout: Duration,
    /// How long a revocation waits for the revoked partitions' current records.
    pub revoke_timeout: Duration,
    /// The retry layer's policy.
    pub retry: RetryPolicy,
    /// librdkafka properties over the defaults and the configuration's.
    pub properties: Vec<(String, String)>,
}

impl Settings {
    /// Defaults for `group` reading `topics`: 64 MiB buffered, 30 s drain, 10 s revoke,
    /// [`RetryPolicy::default`].
    pub fn new(group: impl Into<String>, topics: Vec<String>) -> Self {
        Settings {
            group: group.into(),
            topics,
            max_buffered_bytes: 64 << 20,
            drain_timeout: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            properties: Vec::new(),
        }
    }
}

