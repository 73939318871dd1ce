//! [`PublishError`]: why a publish failed, whether retrying can help, and the record back.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;

use super::Record;

/// A publish that failed. Every variant says whether retrying can help; the variants of a
/// failed send hand the record back ([`PublishError::into_record`]) so it can be sent
/// again or dead-lettered unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The producer could not be created (bad configuration).
    #[error("cannot create producer: {0}")]
    Client(#[source] KafkaError),
    /// The event's schema is not known to the codec.
    #[error("no schema for event type {0}")]
    UnknownSchema(String),
    /// The event does not fit its schema.
    #[error("cannot encode {event_type}: {reason}")]
    Encode {
        /// The event type.
        event_type: String,
        /// What the encoder said.
        reason: String,
    },
    /// The encoded record is larger than `message.max.bytes`; it was not sent.
    #[error("record of {size} bytes exceeds message.max.bytes = {limit}; not sent")]
    Oversize {
        /// Record size (key + value + headers).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The broker did not acknowledge the record. The record is handed back unchanged.
    #[error("delivery to {topic} failed: {source}{}{}", too_large_hint(source), client_error.as_deref().map(|e| format!(" (last client error: {e})")).unwrap_or_default())]
    Delivery {
        /// The topic.
        topic: String,
        /// The client's error (boxed: it is large, and every publish returns this type).
        #[source]
        source: Box<KafkaError>,
        /// The client's last error while the record waited, if any: why a record timed
        /// out (a failed SASL authentication, a TLS handshake, an unreachable broker).
        client_error: Option<String>,
        /// The record that was not acknowledged.
        record: Box<OwnedMessage>,
    },
    /// The producer hit a fatal error (an idempotent producer that lost track of its
    /// sequence numbers, for example `OUT_OF_ORDER_SEQUENCE_NUMBER`), and this record was
    /// not acknowledged: it was still queued (librdkafka purged it), or it was sent after
    /// the error. The record is handed back unchanged.
    ///
    /// The publisher stays failed, and fails every send the same way, until
    /// [`Publisher::reset`](super::Publisher::reset): it never switches producers behind the
    /// caller's back, because a new producer would send later records before the caller
    /// retried these, and one key's events would land out of order. To recover: collect
    /// every outstanding send's result, call `reset`, then republish the failed records in
    /// their original order with the same event ids (consumers dedupe on `ce_id`, which
    /// matters for the ones that [`possibly_persisted`](PublishError::possibly_persisted)).
    #[error("producer failed fatally ({reason}); record for {topic} not acknowledged{}: call Publisher::reset, then republish in order", if *possibly_persisted { " (it may have been written)" } else { "" })]
    Fatal {
        /// The topic.
        topic: String,
        /// librdkafka's description of the fatal error.
        reason: String,
        /// True when the record had been sent and may have been written before the error.
        possibly_persisted: bool,
        /// The record that was not acknowledged.
        record: Box<OwnedMessage>,
    },
    /// The producer was destroyed before it reported on the record (it was dropped without
    /// a flush). The record may or may not have been written, and its bytes are gone.
    #[error("the producer was closed before it reported on a record for {topic}; it may have been written")]
    Canceled {
        /// The topic.
        topic: String,
    },
    /// The codec could not frame the payload (for example the schema registry is down).
    #[error("cannot frame payload: {0}")]
    Codec(String),
    /// Not sent because an earlier event of the same aggregate in the same
    /// [`Publisher::publish_all`](super::Publisher::publish_all) could not be sent: sent,
    /// it would have landed before that one on a retry. Publish it again after the
    /// earlier one.
    #[error("not sent: an earlier event of aggregate {aggregate_id} in this batch failed")]
    EarlierFailed {
        /// The aggregate id (the record key).
        aggregate_id: String,
    },
}

impl PublishError {
    /// True when sending the same record again through this publisher may succeed.
    /// [`PublishError::Fatal`] is not: the publisher must be [reset](super::Publisher::reset)
    /// first (see [`PublishError::is_fatal`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Delivery { source, .. } => !matches!(
                source.rdkafka_error_code(),
                Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord)
            ),
            PublishError::Codec(_) => true,
            _ => false,
        }
    }

    /// True when the producer is in a fatal state: nothing more is sent until
    /// [`Publisher::reset`](super::Publisher::reset).
    pub fn is_fatal(&self) -> bool {
        matches!(self, PublishError::Fatal { .. })
    }

    /// True when the record may have been written although the delivery failed (a timeout
    /// after sending, an in-flight record when the producer failed fatally). Republish it
    /// with the same event id; consumers dedupe on `ce_id`.
    pub fn possibly_persisted(&self) -> bool {
        match self {
            PublishError::Delivery { source, .. } => {
                matches!(source.rdkafka_error_code(), Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut))
            }
            PublishError::Fatal { possibly_persisted, .. } => *possibly_persisted,
            PublishError::Canceled { .. } => true,
            _ => false,
        }
    }

    /// The record a failed send hands back, as the client returned it.
    pub fn record(&self) -> Option<&OwnedMessage> {
        match self {
            PublishError::Delivery { record, .. } | PublishError::Fatal { record, .. } => Some(record),
            _ => None,
        }
    }

    /// The record a failed send hands back, ready for
    /// [`Publisher::send_record`](super::Publisher::send_record): same topic, key, value
    /// and headers, nulls kept null.
    pub fn into_record(self) -> Option<Record> {
        self.record().map(Record::from_message)
    }
}

/// What to do about a record the broker refused as too large, which may fit on its own:
/// the broker checks a whole batch against the topic's `max.message.bytes`, and librdkafka
/// does not split a refused batch.
fn too_large_hint(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
            " (the record, or the batch librdkafka sent it in, is over the topic's max.message.bytes; a refused batch is not split: set batch.size below the topic's limit)"
        }
        _ => "",
    }
}
