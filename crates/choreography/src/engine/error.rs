//! What can stop an engine.

use herald_bus::runtime::ConsumerError;
use rdkafka::error::KafkaError;

/// Why an [`Engine`](super::Engine) could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The participant consumes nothing.
    #[error("participant {0} consumes no topic")]
    NoInputs(String),
    /// The input topics (and the changelog) do not have the same partition count, or one
    /// is missing.
    #[error("not co-partitioned: {0}")]
    Partitions(String),
    /// A topic the participant emits to (by a name it declares) does not exist. The engine
    /// makes only its changelog, repartition and dead-letter topics; a missing output would
    /// fail every transaction, so every partition of the process would wait.
    #[error("output topic {0} does not exist: create it before the engine starts (with the partitions its readers need)")]
    MissingOutput(String),
    /// The state type's changelog codec could not be built.
    #[error(transparent)]
    Changelog(#[from] crate::changelog::ChangelogError),
    /// A Kafka client could not be created or a call failed for good.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The dead-letter publisher could not be created.
    #[error("dead-letter publisher: {0}")]
    DeadLetters(String),
    /// Topic administration failed.
    #[error("admin: {0}")]
    Admin(String),
    /// The consumer runtime failed.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The coordinator (the task that reacts and commits) ended while the engine ran, a
    /// panic outside a reaction for example: nothing could commit any more.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// A changelog partition could not be read back in time.
    #[error("restoring changelog {topic}[{partition}]: {reason}")]
    Restore {
        /// Changelog topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Why.
        reason: String,
    },
}

impl EngineError {
    /// Whether a restart with the same configuration cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, EngineError::NoInputs(_) | EngineError::Partitions(_) | EngineError::MissingOutput(_) | EngineError::Changelog(_))
    }

    /// Whether the group fenced the engine's static member ([`ConsumerError::FencedInstance`]):
    /// once after the broker was away, a restart mends it; again soon after a restart,
    /// another process runs with the same instance id.
    pub fn is_fenced_instance(&self) -> bool {
        matches!(self, EngineError::Consumer(ConsumerError::FencedInstance(_)))
    }
}
