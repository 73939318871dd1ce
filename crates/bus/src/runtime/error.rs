//! Why a consumer could not start or stopped.

use rdkafka::error::KafkaError;

use crate::{admin, PublishError};

/// A consumer could not start, or hit a condition it cannot recover from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// No handler was subscribed.
    #[error("no topic subscribed")]
    NothingSubscribed,
    /// The rdkafka consumer could not be created or subscribed.
    #[error("kafka client error: {0}")]
    Client(#[from] KafkaError),
    /// The dead-letter producer could not be created.
    #[error("dead-letter producer: {0}")]
    Publisher(#[from] PublishError),
    /// A dead-letter topic could not be created.
    #[error("dead-letter topic: {0}")]
    Admin(#[from] admin::AdminError),
    /// The consumer was built on tokio's current-thread runtime. Rebalance hooks wait for
    /// partition workers and must step off the async thread to do so, which only the
    /// multi-threaded runtime allows.
    #[error("the consumer needs tokio's multi-threaded runtime (use #[tokio::main] or #[tokio::test(flavor = \"multi_thread\")]): rebalance hooks wait for the partition workers")]
    CurrentThreadRuntime,
    /// The broker refused the credentials or the permissions (SASL authentication,
    /// topic or group authorization). Retrying with the same configuration cannot help.
    #[error("not authorized by the broker: {0}")]
    Authentication(String),
    /// A subscribed topic that this consumer had read from no longer exists (the broker
    /// said so three times, two seconds apart: see [`admin::topic_gone`](crate::admin::topic_gone)).
    #[error("subscribed topic {0} was deleted")]
    TopicDeleted(String),
    /// librdkafka raised a fatal error: the client instance cannot be used any more.
    #[error("fatal kafka client error: {0}")]
    Fatal(String),
    /// The broker fenced this static member (`FENCED_INSTANCE_ID`): another consumer joined
    /// the group with its `group.instance.id`, or (librdkafka#3437) its session expired
    /// while the broker was away and it rejoined under a new member id. Fatal for the
    /// client, as [`ConsumerError::Fatal`]; a new client may join again, but if it is
    /// fenced again soon, another process uses the same instance id.
    #[error("fenced by the group: {0}")]
    FencedInstance(String),
}

impl ConsumerError {
    /// True for errors that end a running consumer (as opposed to build errors).
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConsumerError::Authentication(_) | ConsumerError::TopicDeleted(_) | ConsumerError::Fatal(_) | ConsumerError::FencedInstance(_))
    }
}
