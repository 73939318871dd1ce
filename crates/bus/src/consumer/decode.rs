//! Decoding a consumed record into a typed envelope: the codec finds the writer schema,
//! the family decodes, the headers give the metadata.

use rdkafka::message::{Message, OwnedMessage};

use super::record::OwnedRecord;
use crate::codec::{Codec, DecodeError};
use crate::dead_letter::{Failure, Stage};
use crate::envelope::header::TYPE;
use crate::envelope::{Envelope, Metadata, Position};
use crate::EventFamily;

/// Decodes a consumed record into an envelope of family `F`: the codec finds the writer
/// schema, the family decodes (resolving to its own schema versions), the headers give
/// the metadata. A failure says which stage failed and why, ready for the dead-letter
/// topic. Runtimes other than [`Consumer`](crate::Consumer) (projectors, sagas) use it
/// too.
pub async fn decode<F: EventFamily>(codec: &dyn Codec, msg: &OwnedMessage) -> Result<Envelope<F>, Failure> {
    let headers = msg.headers().into_iter().flat_map(crate::headers::pairs);
    let position = || Position { topic: msg.topic().to_owned(), partition: msg.partition(), offset: msg.offset() };
    decode_parts(codec, msg.payload(), msg.key(), headers, msg.timestamp().to_millis(), position).await
}

/// [`decode`] of an [`OwnedRecord`].
pub async fn decode_record<F: EventFamily>(codec: &dyn Codec, record: &OwnedRecord) -> Result<Envelope<F>, Failure> {
    let position = || Position { topic: record.topic().to_owned(), partition: record.partition(), offset: record.offset() };
    decode_parts(codec, record.payload(), record.key(), record.headers(), record.timestamp().to_millis(), position).await
}

async fn decode_parts<'a, F: EventFamily>(
    codec: &dyn Codec,
    payload: Option<&[u8]>,
    key: Option<&[u8]>,
    headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    timestamp_millis: Option<i64>,
    position: impl FnOnce() -> Position,
) -> Result<Envelope<F>, Failure> {
    let decode_failure = |e: &dyn std::fmt::Display| Failure { stage: Stage::Decode, reason: e.to_string(), attempts: 0 };
    let payload = payload.ok_or_else(|| decode_failure(&DecodeError::Empty))?;
    let header = match codec.read_header_now(payload) {
        Some(header) => header,
        None => codec.read_header(payload).await,
    };
    let (writer, datum) = match header {
        Ok(found) => found,
        Err(e) => return Err(header_failure(e, headers, F::TYPES)),
    };
    let event = match F::decode(&writer.name, &writer, datum) {
        Ok(Some(event)) => event,
        Ok(None) => {
            return Err(Failure {
                stage: Stage::UnknownType,
                reason: format!("event type {} is not handled on this topic (expected one of {:?})", writer.name, F::TYPES),
                attempts: 0,
            })
        }
        Err(e) => return Err(decode_failure(&e)),
    };
    let mut meta = Metadata::from_record_header_pairs(headers, key, &writer.name, timestamp_millis).map_err(|e| decode_failure(&e))?;
    meta.check_type(&writer.name).map_err(|e| decode_failure(&e))?;
    let position = position();
    // A record without `ce_id` is known by its place in the log.
    meta.identify_by_position(&position.topic, position.partition, position.offset);
    Ok(Envelope { event, meta, position })
}

/// Why a record's writer schema was not found, as the failure its dead letter carries. A
/// schema this reader does not know, on a record whose `ce_type` names a type outside
/// `types` (the family's), is an unknown type (stage `unknown-type`: the consumer's
/// [`UnknownTypes`](super::UnknownTypes) policy applies, and a reader that does not care
/// about a type has no reason to hold its schema), not undecodable bytes (stage
/// `decode`, or `unavailable` when the schema could not be fetched now).
///
/// ```
/// use herald_bus::codec::DecodeError;
/// use herald_bus::consumer::header_failure;
/// use herald_bus::dead_letter::Stage;
/// let headers = || [(&b"ce_type"[..], Some(&b"shop.GiftWrapped"[..]))].into_iter();
/// let unknown = || DecodeError::UnknownFingerprint(herald_bus::schema::Fingerprint([7; 8]));
/// assert_eq!(header_failure(unknown(), headers(), &["shop.OrderPlaced"]).stage, Stage::UnknownType);
/// // A member's type with a schema this reader lacks: its bytes cannot be read.
/// assert_eq!(header_failure(unknown(), headers(), &["shop.GiftWrapped"]).stage, Stage::Decode);
/// ```
pub fn header_failure<'a>(e: DecodeError, mut headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>, types: &[&str]) -> Failure {
    if matches!(e, DecodeError::UnknownFingerprint(_)) {
        let named = headers.find(|(name, _)| *name == TYPE.as_bytes()).and_then(|(_, value)| std::str::from_utf8(value?).ok());
        if let Some(type_name) = named.filter(|t| !types.contains(t)) {
            let reason = format!("event type {type_name} (its ce_type; {e}) is not handled on this topic (expected one of {types:?})");
            return Failure { stage: Stage::UnknownType, reason, attempts: 0 };
        }
    }
    Failure { stage: if e.is_transient() { Stage::Unavailable } else { Stage::Decode }, reason: e.to_string(), attempts: 0 }
}
