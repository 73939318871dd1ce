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
    /// false for input that will never be accepted, and for what the broker refuses until
    /// an operator acts (authorization, a topic policy, an invalid topic configuration).
    ///
    /// ```
    /// use herald_services::RegistryError;
    /// use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    /// assert!(RegistryError::Timeout(std::time::Duration::from_secs(10)).is_retryable());
    /// assert!(RegistryError::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown)).is_retryable());
    /// assert!(!RegistryError::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)).is_retryable());
    /// assert!(!RegistryError::InvalidName("a/b".into()).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        let code = match self {
            RegistryError::Timeout(_) => return true,
            RegistryError::Kafka(e) => e.rdkafka_error_code(),
            RegistryError::Admin(herald_bus::admin::AdminError::Kafka(e)) => e.rdkafka_error_code(),
            RegistryError::Admin(herald_bus::admin::AdminError::Create { code, .. }) => Some(*code),
            RegistryError::Admin(_) | RegistryError::InvalidName(_) | RegistryError::Decode(_) | RegistryError::InvalidSettings(_) => return false,
        };
        !code.is_some_and(refused_until_an_operator_acts)
    }
}

/// Broker answers that no retry changes.
fn refused_until_an_operator_acts(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        code,
        TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
            | TransactionalIdAuthorizationFailed
            | SaslAuthenticationFailed
            | Authentication
            | PolicyViolation
            | InvalidConfig
            | InvalidReplicationFactor
            | InvalidPartitions
            | InvalidTopic
            | MessageSizeTooLarge
            | MessageBatchTooLarge
    )
}
