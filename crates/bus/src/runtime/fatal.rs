//! Which client errors end a consumer.
//!
//! librdkafka retries most errors by itself (brokers down, leaders moving), and the
//! runtime only logs them. A few can never heal without a person: the broker refuses the
//! credentials or the permissions, the client raised a fatal error, or a subscribed topic
//! that the consumer was reading was deleted. Those end [`Runtime::run`](super::Runtime::run)
//! with an error instead of logging forever.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::ConsumerError;

/// What a client error means for the consumer.
#[derive(Debug)]
pub enum Verdict {
    /// Logged and retried by librdkafka.
    Transient,
    /// Ends the consumer.
    Fatal(ConsumerError),
    /// A topic is unknown to the broker: fatal if it is one this consumer was reading
    /// (it was deleted), which the runtime checks against the cluster's metadata (the
    /// error does not say which topic).
    UnknownTopic,
}

/// Classifies a client error (`reason`: librdkafka's text, when it gave one).
pub fn classify(error: &KafkaError, reason: &str) -> Verdict {
    let Some(code) = error.rdkafka_error_code() else { return Verdict::Transient };
    match code {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::GroupAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => Verdict::Fatal(ConsumerError::Authentication(with_reason(error, reason))),
        RDKafkaErrorCode::FencedInstanceId => Verdict::Fatal(ConsumerError::FencedInstance(with_reason(error, reason))),
        RDKafkaErrorCode::Fatal => Verdict::Fatal(ConsumerError::Fatal(with_reason(error, reason))),
        _ if matches!(error, KafkaError::MessageConsumptionFatal(_)) => Verdict::Fatal(ConsumerError::Fatal(with_reason(error, reason))),
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => Verdict::UnknownTopic,
        _ => Verdict::Transient,
    }
}

fn with_reason(error: &KafkaError, reason: &str) -> String {
    if reason.is_empty() { error.to_string() } else { format!("{error}: {reason}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_fatal_errors_end_the_consumer_transient_ones_do_not() {
        let auth = KafkaError::Global(RDKafkaErrorCode::Authentication);
        assert!(matches!(classify(&auth, "SASL authentication error"), Verdict::Fatal(ConsumerError::Authentication(_))));
        let fatal = KafkaError::Global(RDKafkaErrorCode::Fatal);
        assert!(matches!(classify(&fatal, ""), Verdict::Fatal(ConsumerError::Fatal(_))));
        let fenced = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId);
        assert!(matches!(classify(&fenced, ""), Verdict::Fatal(ConsumerError::FencedInstance(_))));
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert!(matches!(classify(&down, "all brokers down"), Verdict::Transient));
        let gone = KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(matches!(classify(&gone, ""), Verdict::UnknownTopic));
    }
}
