//! What can fail in the registry.

/// A registry or directory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A service or instance name cannot be used (empty, or a service containing `/`).
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// A record on the registry topic is not an instance record this version reads.
    #[error("not a registry record: {0}")]
    Decode(String),
    /// The registry topic could not be created or inspected.
    #[error("registry topic: {0}")]
    Admin(#[from] herald_bus::admin::AdminError),
    /// A Kafka client could not be created, or a request failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Settings that cannot work: a zero heartbeat interval, or one so long that its TTL
    /// (three intervals) overflows the clock.
    #[error("invalid registry settings: {0}")]
    InvalidSettings(String),
    /// A registration or tombstone was not acknowledged before its deadline.
    #[error("not acknowledged within {0:?}")]
    Timeout(std::time::Duration),
}

impl RegistryError {
    /// True when trying again later may succeed (the broker was unreachable or slow);
    /// false for input that will never be accepted.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RegistryError::Kafka(_) | RegistryError::Timeout(_) | RegistryError::Admin(_))
    }
}
