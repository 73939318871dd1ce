//! Dead-letter records: the original record plus why it could not be handled.
//!
//! A dead-lettered record keeps the original key, value and headers byte for byte (a null
//! key or value stays null, so a replayed tombstone is still a tombstone), and adds
//! `herald.dlq.*` headers (all UTF-8 text, readable with `kcat -J` or `herald dlq list`):
//!
//! | header                    | value                                            |
//! |---------------------------|--------------------------------------------------|
//! | `herald.dlq.reason`       | the error, for people                            |
//! | `herald.dlq.stage`        | `decode`, `unknown-type` or `handler`            |
//! | `herald.dlq.attempts`     | handler attempts made (0 for decode failures)    |
//! | `herald.dlq.topic`        | original topic                                   |
//! | `herald.dlq.partition`    | original partition                               |
//! | `herald.dlq.offset`       | original offset                                  |
//! | `herald.dlq.group`        | consumer group that gave up                      |
//! | `herald.dlq.time`         | RFC 3339 time of dead-lettering                  |

use chrono::{SecondsFormat, Utc};
use rdkafka::message::{Header, Message, OwnedMessage};

use crate::publisher::Record;

/// Header names of dead-letter records.
pub mod header {
    /// Why the record was dead-lettered.
    pub const REASON: &str = "herald.dlq.reason";
    /// Where processing failed.
    pub const STAGE: &str = "herald.dlq.stage";
    /// Handler attempts made.
    pub const ATTEMPTS: &str = "herald.dlq.attempts";
    /// Original topic.
    pub const TOPIC: &str = "herald.dlq.topic";
    /// Original partition.
    pub const PARTITION: &str = "herald.dlq.partition";
    /// Original offset.
    pub const OFFSET: &str = "herald.dlq.offset";
    /// Consumer group.
    pub const GROUP: &str = "herald.dlq.group";
    /// When it was dead-lettered.
    pub const TIME: &str = "herald.dlq.time";
    /// Prefix shared by all of the above.
    pub const PREFIX: &str = "herald.dlq.";
}

/// Where processing of a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The payload could not be decoded (bad framing, unknown schema, corrupt datum).
    Decode,
    /// The payload decoded, but its type is not one the consumer handles.
    UnknownType,
    /// The handler failed permanently or ran out of retries.
    Handler,
    /// The writer schema could not be fetched (registry down). Never dead-lettered: the
    /// consumer waits and retries the record.
    Unavailable,
}

impl Stage {
    /// The header value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::UnknownType => "unknown-type",
            Stage::Handler => "handler",
            Stage::Unavailable => "unavailable",
        }
    }
}

/// Why a record is being dead-lettered.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Where it failed.
    pub stage: Stage,
    /// The error, for people.
    pub reason: String,
    /// Handler attempts made.
    pub attempts: u32,
}

/// The dead-letter topic for `topic`: `<topic>.dlq`, or `<topic>_dlq` for topics that use
/// underscores (so names never mix `.` and `_`).
///
/// ```
/// assert_eq!(herald_bus::dead_letter::topic_for("shop.orders"), "shop.orders.dlq");
/// assert_eq!(herald_bus::dead_letter::topic_for("shop_orders"), "shop_orders_dlq");
/// ```
pub fn topic_for(topic: &str) -> String {
    if topic.contains('_') { format!("{topic}_dlq") } else { format!("{topic}.dlq") }
}

/// Bytes a dead letter may take beyond its record: the `herald.dlq.*` headers (a reason
/// of at most [`MAX_REASON_BYTES`], names, topic, group, time) with room to spare. The
/// topics [`create_topics`] makes allow this much more than their records' topics, so a
/// record the broker took at its topic's limit can still be dead-lettered.
pub const HEADROOM: usize = 64 * 1024;

/// librdkafka's ceiling for `message.max.bytes`.
const LIBRDKAFKA_MAX_MESSAGE_BYTES: &str = "1000000000";

/// `config` for a producer that writes dead letters: a letter is a record the broker took
/// plus its headers, so its topic's `max.message.bytes` decides whether it fits, not a
/// client limit (`message.max.bytes` is set to librdkafka's ceiling). A letter the topic
/// refuses is reported as [`NotSent::Unwritable`].
///
/// ```
/// let kafka = herald_bus::KafkaConfig::new("127.0.0.1:9092");
/// let letters = herald_bus::dead_letter::for_dead_letters(&kafka);
/// assert_eq!(letters.get("message.max.bytes"), Some("1000000000"));
/// ```
pub fn for_dead_letters(config: &crate::KafkaConfig) -> crate::KafkaConfig {
    config.clone().set("message.max.bytes", LIBRDKAFKA_MAX_MESSAGE_BYTES)
}

/// Creates the dead-letter topic ([`topic_for`]) of each of `topics` that lacks one, with
/// as many partitions as its topic (one for a topic that does not exist yet), so a letter
/// keeps its record's partition, and a `max.message.bytes` [`HEADROOM`] above its topic's.
/// When the topic's configs cannot be read (it does not exist yet, no `DescribeConfigs`
/// permission) or the cluster refuses that setting (a managed cluster's policy), the
/// dead-letter topic gets the broker's default, with a warning. Topics that exist are left
/// as they are.
///
/// ```no_run
/// # async fn f(config: herald_bus::KafkaConfig) -> Result<(), herald_bus::admin::AdminError> {
/// herald_bus::dead_letter::create_topics(&config, &["shop.orders"]).await?; // shop.orders.dlq
/// # Ok(()) }
/// ```
pub async fn create_topics(config: &crate::KafkaConfig, topics: &[impl AsRef<str>]) -> Result<(), crate::admin::AdminError> {
    use crate::admin::TopicSpec;
    for topic in topics {
        let topic = topic.as_ref();
        let partitions = crate::admin::partition_count(config, topic).await?.unwrap_or(1);
        crate::admin::create_topic_roomier_than(config, TopicSpec::new(topic_for(topic)).partitions(partitions as i32), topic, HEADROOM).await?;
    }
    Ok(())
}

/// A publisher for dead letters ([`for_dead_letters`]).
///
/// ```
/// let kafka = herald_bus::KafkaConfig::new("127.0.0.1:9092");
/// let letters = herald_bus::dead_letter::publisher(&kafka, "herald:billing")?;
/// # Ok::<(), herald_bus::PublishError>(())
/// ```
pub fn publisher(config: &crate::KafkaConfig, source: impl Into<String>) -> Result<crate::Publisher, crate::PublishError> {
    crate::Publisher::new(&for_dead_letters(config), crate::PublisherOptions::new(source))
}

/// Builds the dead-letter record for `original`.
pub fn record(original: &OwnedMessage, failure: &Failure, group: &str, dlq_topic: &str) -> Record {
    // Names as bytes: a name that is not UTF-8 is kept as it was (see `crate::headers`).
    let mut headers = crate::headers::build(original.headers().into_iter().flat_map(crate::headers::pairs).filter(|(name, _)| !name.starts_with(header::PREFIX.as_bytes())));
    let fields = [
        (header::REASON, truncate_reason(&failure.reason).into_owned()),
        (header::STAGE, failure.stage.as_str().to_owned()),
        (header::ATTEMPTS, failure.attempts.to_string()),
        (header::TOPIC, original.topic().to_owned()),
        (header::PARTITION, original.partition().to_string()),
        (header::OFFSET, original.offset().to_string()),
        (header::GROUP, group.to_owned()),
        (header::TIME, Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
    ];
    for (key, value) in &fields {
        headers = headers.insert(Header { key, value: Some(value.as_str()) });
    }
    Record {
        topic: dlq_topic.to_owned(),
        // A null key or value stays null: an empty key routes elsewhere, and an empty value
        // is not a tombstone.
        key: original.key().map(<[u8]>::to_vec),
        payload: original.payload().map(<[u8]>::to_vec),
        headers,
        partition: None,
    }
}

/// Longest `herald.dlq.reason` written, in bytes: a reason is for people, and a huge one
/// (a handler error that embeds a payload, a backtrace) must not make the dead letter
/// itself too large to write.
pub const MAX_REASON_BYTES: usize = 4096;

/// `reason` cut to at most [`MAX_REASON_BYTES`] (on a character boundary), saying how much
/// was cut.
///
/// ```
/// use herald_bus::dead_letter::{truncate_reason, MAX_REASON_BYTES};
/// assert_eq!(truncate_reason("boom"), "boom");
/// let long = "é".repeat(MAX_REASON_BYTES);
/// let cut = truncate_reason(&long);
/// assert!(cut.len() <= MAX_REASON_BYTES && cut.ends_with("bytes cut)"));
/// ```
pub fn truncate_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.into();
    }
    let note = format!("... ({} bytes cut)", reason.len());
    let mut end = MAX_REASON_BYTES.saturating_sub(note.len() + 8);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes cut)", &reason[..end], reason.len() - end).into()
}

/// Why [`send_until_acked`] did not write a dead letter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotSent {
    /// The cancellation token fired first.
    #[error("cancelled before the dead letter was acknowledged")]
    Cancelled,
    /// The dead letter can never be written as it is: too large for the producer or the
    /// topic (`message.max.bytes`, `max.message.bytes`), not authorized, an invalid topic.
    /// Sending it again cannot help; the caller must stop at the original record.
    #[error("the dead letter cannot be written: {0}")]
    Unwritable(#[source] crate::PublishError),
}

/// True when sending the same dead letter again may succeed (the broker is away, a
/// leader moves, a timeout); false when the error is about the record or the permissions.
pub fn can_succeed_later(error: &crate::PublishError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as Code;
    match error {
        crate::PublishError::Delivery { source, .. } => {
            error.is_retryable()
                && !matches!(
                    source.rdkafka_error_code(),
                    Some(
                        Code::MessageSizeTooLarge
                            | Code::InvalidRecord
                            | Code::MessageBatchTooLarge
                            | Code::InvalidMessageSize
                            | Code::TopicAuthorizationFailed
                            | Code::ClusterAuthorizationFailed
                            | Code::TransactionalIdAuthorizationFailed
                            | Code::InvalidTopic
                            | Code::InvalidRequiredAcks
                            | Code::PolicyViolation
                            | Code::UnsupportedForMessageFormat
                            | Code::InvalidArgument
                    )
                )
        }
        // A publisher that failed fatally refuses sends until reset; the send loop resets it.
        other => other.is_retryable() || other.is_fatal(),
    }
}

/// Writes a dead-letter record, retrying with capped exponential backoff while the error
/// is one that can heal ([`can_succeed_later`]): nothing is lost while the broker is away.
/// Returns [`NotSent::Unwritable`] at once for a dead letter that can never be written,
/// and [`NotSent::Cancelled`] when `cancel` fires first; either way the caller must not
/// move past the original record.
///
/// Cancellation-safe: dropping the future abandons the retries (a send already queued may
/// still land; dead letters are at least once).
pub async fn send_until_acked(
    publisher: &crate::Publisher,
    record: &Record,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), NotSent> {
    let mut retry = 0u32;
    loop {
        let sent = tokio::select! {
            sent = publisher.send_record(record.clone()) => sent,
            _ = cancel.cancelled() => return Err(NotSent::Cancelled),
        };
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if !can_succeed_later(&e) => return Err(NotSent::Unwritable(e)),
            Err(e) => {
                retry += 1;
                tracing::error!(topic = %record.topic, error = %e, retry, "cannot write the dead letter; retrying");
                if e.is_fatal() {
                    // The publisher refuses every send until reset (dead letters need no
                    // order among themselves, so resetting here is safe).
                    if let Err(e) = publisher.reset(std::time::Duration::from_secs(30)).await {
                        tracing::error!(error = %e, "cannot replace the dead-letter producer");
                    }
                }
                let backoff = std::time::Duration::from_millis(100u64.saturating_mul(1 << retry.min(8))).min(std::time::Duration::from_secs(30));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return Err(NotSent::Cancelled),
                }
            }
        }
    }
}

/// A dead-letter record read back, with its failure details parsed.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Position in the dead-letter topic.
    pub dlq_partition: i32,
    /// Offset in the dead-letter topic.
    pub dlq_offset: i64,
    /// `herald.dlq.reason`.
    pub reason: String,
    /// `herald.dlq.stage`.
    pub stage: String,
    /// `herald.dlq.attempts`.
    pub attempts: u32,
    /// Original topic.
    pub topic: String,
    /// Original partition.
    pub partition: i32,
    /// Original offset.
    pub offset: i64,
    /// Group that gave up.
    pub group: String,
    /// When.
    pub time: String,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value.
    pub payload: Option<Vec<u8>>,
    /// Original headers (without the `herald.dlq.*` ones).
    /// Names are bytes, as on the wire: one that is not UTF-8 is kept as it was.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl DeadLetter {
    /// Parses a record read from a dead-letter topic; `None` if it lacks Herald's headers.
    pub fn parse<M: Message>(msg: &M) -> Option<DeadLetter>
    where
        M::Headers: crate::headers::HeaderList,
    {
        let mut dl = DeadLetter {
            dlq_partition: msg.partition(),
            dlq_offset: msg.offset(),
            reason: String::new(),
            stage: String::new(),
            attempts: 0,
            topic: String::new(),
            partition: -1,
            offset: -1,
            group: String::new(),
            time: String::new(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers: Vec::new(),
        };
        let headers = msg.headers()?;
        for (name, value) in crate::headers::pairs(headers) {
            let text = value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            // A name that is not UTF-8 is none of Herald's: an original header.
            match std::str::from_utf8(name).unwrap_or_default() {
                header::REASON => dl.reason = text,
                header::STAGE => dl.stage = text,
                header::ATTEMPTS => dl.attempts = text.parse().unwrap_or(0),
                header::TOPIC => dl.topic = text,
                header::PARTITION => dl.partition = text.parse().unwrap_or(-1),
                header::OFFSET => dl.offset = text.parse().unwrap_or(-1),
                header::GROUP => dl.group = text,
                header::TIME => dl.time = text,
                _ => dl.headers.push((name.to_vec(), value.map(<[u8]>::to_vec))),
            }
        }
        (!dl.topic.is_empty()).then_some(dl)
    }

    /// The record that republishes the original to its topic: same key, value and headers.
    pub fn replay_record(&self) -> Record {
        let headers = crate::headers::build(self.headers.iter().map(|(name, value)| (name.as_slice(), value.as_deref())));
        Record {
            topic: self.topic.clone(),
            key: self.key.clone(),
            payload: self.payload.clone(),
            headers,
            partition: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Headers, OwnedHeaders};

    #[test]
    fn a_dead_letter_round_trips_and_replays_the_original() {
        let original_headers = OwnedHeaders::new().insert(Header { key: "ce_id", value: Some("abc") });
        let original = OwnedMessage::new(Some(vec![1, 2, 3]), Some(b"k1".to_vec()), "shop.orders".into(), rdkafka::Timestamp::NotAvailable, 2, 41, Some(original_headers));
        let failure = Failure { stage: Stage::Handler, reason: "boom".into(), attempts: 5 };
        let rec = record(&original, &failure, "g1", "shop.orders.dlq");
        let stored = OwnedMessage::new(rec.payload.clone(), rec.key.clone(), rec.topic.clone(), rdkafka::Timestamp::NotAvailable, 0, 7, Some(rec.headers.clone()));
        let dl = DeadLetter::parse(&stored).expect("herald dead letter");
        assert_eq!((dl.topic.as_str(), dl.partition, dl.offset, dl.attempts), ("shop.orders", 2, 41, 5));
        assert_eq!((dl.stage.as_str(), dl.reason.as_str(), dl.group.as_str()), ("handler", "boom", "g1"));
        let replay = dl.replay_record();
        assert_eq!((replay.topic.as_str(), replay.key.as_deref(), replay.payload.as_deref()), ("shop.orders", Some(&b"k1"[..]), Some(&[1u8, 2, 3][..])));
        assert_eq!(replay.headers.count(), 1);
    }

    #[test]
    fn a_null_key_and_a_tombstone_stay_null_through_dead_letter_and_replay() {
        let original = OwnedMessage::new(None, None, "shop.carts".into(), rdkafka::Timestamp::NotAvailable, 0, 3, None);
        let failure = Failure { stage: Stage::Decode, reason: "no value".into(), attempts: 0 };
        let rec = record(&original, &failure, "g1", "shop.carts.dlq");
        assert_eq!((rec.key.as_deref(), rec.payload.as_deref()), (None, None));
        let stored = OwnedMessage::new(rec.payload.clone(), rec.key.clone(), rec.topic.clone(), rdkafka::Timestamp::NotAvailable, 0, 0, Some(rec.headers.clone()));
        let replay = DeadLetter::parse(&stored).expect("herald dead letter").replay_record();
        assert_eq!((replay.key, replay.payload), (None, None));
    }
}
