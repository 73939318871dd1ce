//! A reaction written before it is applied: each emitted event's payload, and a check that
//! the new state encodes. A reaction that cannot be written is refused whole (its input is
//! dead-lettered, its slot left as it was) instead of committing part of it.

use apache_avro::AvroSchema;
use herald_bus::codec::write_single_object_header;
use serde::Serialize;

use crate::changelog::StateCodec;
use crate::emit::Emitted;
use crate::reaction::Reaction;

/// Bytes allowed, beyond an event's payload, key and own headers, for the CloudEvents
/// headers the engine adds to it (id, type, source, subject, time, content type,
/// traceparent, correlation and causation ids), and beyond a state for the rest of its
/// changelog record (deadlines, flags): generous, so a reaction that passes is not
/// refused by the producer for their sake.
const FRAMING_BYTES: usize = 2048;

/// The largest record a reaction may write: the producer's `message.max.bytes`, and the
/// length of the key its state is kept under.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit {
    pub max_bytes: usize,
    pub key_len: usize,
}

/// The payloads of `reaction`'s events, in order (Avro single-object encoding), once its
/// state, if it sets one, is known to encode with `state`; otherwise what does not encode.
/// An event or a state whose record would be larger than `limit` allows does not either:
/// the producer would refuse it, and the transaction holding it would abort on every try.
pub(super) fn payloads<S: Serialize + serde::de::DeserializeOwned + AvroSchema>(reaction: &Reaction<S>, state: &StateCodec<S>, limit: Limit) -> Result<Vec<Vec<u8>>, String> {
    if let Some(new) = reaction.state() {
        let bytes = state.check(new).map_err(|e| format!("its new state does not encode: {e}"))?;
        let size = bytes + limit.key_len + FRAMING_BYTES;
        if size > limit.max_bytes {
            return Err(format!("its new state takes {bytes} bytes: its changelog record would be over message.max.bytes = {}", limit.max_bytes));
        }
    }
    reaction.emitted().iter().map(|event| payload(event, limit)).collect()
}

/// `event` in Avro single-object encoding: the magic, its schema's fingerprint, the datum.
fn payload(event: &Emitted, limit: Limit) -> Result<Vec<u8>, String> {
    let does_not_encode = |e: &dyn std::fmt::Display| format!("{} for {} does not encode: {e}", event.type_name(), event.topic());
    let known = event.schema().ok_or_else(|| does_not_encode(&format_args!("no schema of that name in its topic's family")))?;
    let mut payload = Vec::with_capacity(256);
    write_single_object_header(known, &mut payload);
    event.encode(&mut payload).map_err(|e| does_not_encode(&e))?;
    // The key is written twice: as the record's key and as `ce_subject`.
    let headers: usize = event.headers().iter().map(|(name, value)| name.len() + value.len()).sum();
    let size = payload.len() + 2 * event.key().len() + headers + FRAMING_BYTES;
    if size > limit.max_bytes {
        return Err(format!("{} for {} would be a record of about {size} bytes, over message.max.bytes = {}", event.type_name(), event.topic(), limit.max_bytes));
    }
    Ok(payload)
}
