//! A reaction written before it is applied: each emitted event's payload, and a check that
//! the new state encodes. A reaction that cannot be written is refused whole (its input is
//! dead-lettered, its slot left as it was) instead of committing part of it.

use apache_avro::AvroSchema;
use herald_bus::codec::write_single_object_header;
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
    let does_not_encode = |e: &dyn std::fmt::Display| format!("{} for {} does not encode: {e}", event.type_name(), event.topic());
    let known = event.schema().ok_or_else(|| does_not_encode(&format_args!("no schema of that name in its topic's family")))?;
    let mut payload = Vec::with_capacity(256);
    write_single_object_header(known, &mut payload);
    event.encode(&mut payload).map_err(|e| does_not_encode(&e))?;
    Ok(payload)
}
