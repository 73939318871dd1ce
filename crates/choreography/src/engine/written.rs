//! A reaction written before it is applied: each emitted event's payload, and a check that
//! the new state encodes. A reaction that cannot be written is refused whole (its input is
//! dead-lettered, its slot left as it was) instead of committing part of it.

use apache_avro::AvroSchema;
use herald_bus::codec::SINGLE_OBJECT_MAGIC;
use serde::Serialize;

use crate::changelog::StateCodec;
use crate::emit::Emitted;
use crate::reaction::Reaction;

/// The payloads of `reaction`'s events, in order (Avro single-object encoding), once its
/// state, if it sets one, is known to encode with `state`; otherwise what does not encode.
pub(super) fn payloads<S: Serialize + serde::de::DeserializeOwned + AvroSchema>(reaction: &Reaction<S>, state: &StateCodec<S>) -> Result<Vec<Vec<u8>>, String> {
    if let Some(new) = reaction.state() {
        state.check(new).map_err(|e| format!("its new state does not encode: {e}"))?;
    }
    reaction.emitted().iter().map(payload).collect()
}

/// `event` in Avro single-object encoding: the magic, its schema's fingerprint, the datum.
fn payload(event: &Emitted) -> Result<Vec<u8>, String> {
    let mut payload = Vec::with_capacity(256);
    payload.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    payload.extend_from_slice(&[0; 8]);
    let known = event.encode(&mut payload).map_err(|e| format!("{} for {} does not encode: {e}", event.type_name(), event.topic()))?;
    payload[SINGLE_OBJECT_MAGIC.len()..SINGLE_OBJECT_MAGIC.len() + 8].copy_from_slice(&known.fingerprint.0);
    Ok(payload)
}
