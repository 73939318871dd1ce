//! A reaction written before it is applied: each emitted event's payload, and a check that
//! the new state encodes. A reaction that cannot be written is refused whole (its input is
//! dead-lettered, its slot left as it was) instead of committing part of it.

use apache_avro::AvroSchema;
use herald_bus::codec::write_single_object_header;
use serde::Serialize;

use super::limits::RecordLimits;
use crate::changelog::StateCodec;
use crate::emit::Emitted;
use crate::reaction::{DeadlineChange, Reaction};

/// Bytes allowed, beyond an event's payload, key and own headers, for the CloudEvents
/// headers the engine adds to it (id, type, source, subject, time, content type,
/// traceparent, correlation and causation ids), and beyond a state for the rest of its
/// changelog record (deadlines, flags): generous, so a reaction that passes is not
/// refused by the producer for their sake.
pub(super) const FRAMING_BYTES: usize = 2048;

/// The largest records a reaction may write (see `limits`), and what of its records' size
/// comes from outside the reaction: the key its state is kept
/// under, the cause's ids every output carries (`ce_causationid`, `ce_correlationid`,
/// `tracestate`, of any length a producer wrote), and the slot's pending deadlines, which
/// its changelog record holds beside the state.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit<'a> {
    pub limits: &'a RecordLimits,
    pub key_len: usize,
    pub cause_bytes: usize,
    pub pending_bytes: usize,
}

impl<'a> Limit<'a> {
    /// The limit for a reaction to an input with metadata `cause`, on `slot`.
    pub(super) fn of<S>(limits: &'a RecordLimits, key: &str, cause: &herald_bus::Metadata, slot: &crate::slot::Slot<S>) -> Self {
        // The lengths of `ce_id()` and `correlation()`, without building them per reaction.
        let ce_id = cause.original_id.as_ref().map_or(36, String::len);
        let correlation = cause.correlation_id.as_ref().map_or(ce_id, String::len);
        let cause_bytes = correlation + ce_id + cause.tracestate.as_ref().map_or(0, String::len);
        Limit { limits, key_len: key.len(), cause_bytes, pending_bytes: slot.deadlines().iter().map(pending_bytes).sum() }
    }

    /// The limit for a deadline of `slot` firing: its cause is the deadline (the largest
    /// of the slot's, since which fires is decided later).
    pub(super) fn of_deadline<S>(limits: &'a RecordLimits, key: &str, slot: &crate::slot::Slot<S>) -> Self {
        let cause_bytes = slot.deadlines().iter().map(|p| 2 * p.correlation_id.len() + 36).max().unwrap_or(0);
        Limit { limits, key_len: key.len(), cause_bytes, pending_bytes: slot.deadlines().iter().map(pending_bytes).sum() }
    }
}

/// What a pending deadline takes in a changelog record beside its name, payload and
/// correlation id: the id of the input that set it (a UUID's 36 characters) and its time.
const PENDING_FIXED_BYTES: usize = 36 + 16;

/// About what a pending deadline takes in a changelog record.
fn pending_bytes(pending: &crate::deadline::Pending) -> usize {
    pending.deadline.name.len() + pending.deadline.payload.len() + pending.correlation_id.len() + PENDING_FIXED_BYTES
}

/// The payloads of `reaction`'s events, in order (Avro single-object encoding), once the
/// state its changelog record will hold is known to encode with `state`; otherwise what
/// does not encode. That state is the one the reaction sets or, for a reaction that sets
/// deadlines and keeps its state, `current` (a new key's `initial()`, never written
/// before): a changelog record that cannot be written would lose the deadlines. An event
/// or a changelog record that would be larger than `limit` allows does not either: the
/// producer would refuse it, and the transaction holding it would abort on every try.
pub(super) fn payloads<S: Serialize + serde::de::DeserializeOwned + AvroSchema>(current: &S, reaction: &Reaction<S>, state: &StateCodec<S>, limit: Limit<'_>) -> Result<Vec<Vec<u8>>, String> {
    let new_deadlines: usize = reaction
        .deadline_changes()
        .iter()
        .map(|change| match change {
            DeadlineChange::Set(d) => d.name.len() + d.payload.len() + limit.cause_bytes + PENDING_FIXED_BYTES,
            DeadlineChange::Cancel(_) => 0,
        })
        .sum();
    let state_bytes = match reaction.state() {
        Some(new) => Some(state.check(new).map_err(|e| format!("its new state does not encode: {e}"))?),
        // Encoded only here: most reactions that keep their state set no deadline.
        None if new_deadlines > 0 => Some(state.check(current).map_err(|e| format!("it sets a deadline, but its state (unchanged) does not encode: {e}"))?),
        None => None,
    };
    if let Some(state_bytes) = state_bytes {
        let size = state_bytes + limit.key_len + limit.pending_bytes + new_deadlines + FRAMING_BYTES;
        let max = limit.limits.changelog();
        if size > max {
            return Err(format!(
                "its changelog record (state {state_bytes} bytes, deadlines about {} bytes) would be over {}",
                limit.pending_bytes + new_deadlines,
                limit.limits.named(max)
            ));
        }
    }
    reaction.emitted().iter().map(|event| payload(event, limit)).collect()
}

/// `event` in Avro single-object encoding: the magic, its schema's fingerprint, the datum.
fn payload(event: &Emitted, limit: Limit<'_>) -> Result<Vec<u8>, String> {
    let does_not_encode = |e: &dyn std::fmt::Display| format!("{} for {} does not encode: {e}", event.type_name(), event.topic());
    let known = event.schema().ok_or_else(|| does_not_encode(&format_args!("no schema of that name in its topic's family")))?;
    let mut payload = Vec::with_capacity(256);
    write_single_object_header(known, &mut payload);
    event.encode(&mut payload).map_err(|e| does_not_encode(&e))?;
    // The key is written twice: as the record's key and as `ce_subject`.
    let headers: usize = event.headers().iter().map(|(name, value)| name.len() + value.len()).sum();
    let size = payload.len() + 2 * event.key().len() + headers + limit.cause_bytes + FRAMING_BYTES;
    let max = limit.limits.output(event.topic(), event.is_exact_topic());
    if size > max {
        return Err(format!("{} for {} would be a record of about {size} bytes, over {}", event.type_name(), event.topic(), limit.limits.named(max)));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadline::{Deadline, Pending};
    use crate::slot::Slot;

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Done {
        id: String,
    }

    impl herald_bus::Event for Done {
        const TYPE: &'static str = "x.Done";
        const SCHEMA: &'static str = r#"{"type":"record","name":"Done","namespace":"x","fields":[{"name":"id","type":"string"}]}"#;
        fn aggregate_id(&self) -> &str {
            &self.id
        }
    }

    herald_bus::family! {
        #[derive(Debug, Clone, serde::Serialize)]
        #[serde(untagged)]
        enum Ev { Done(Done) }
    }

    const OUT: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.out");

    #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
    struct Notes {
        text: String,
    }

    fn limit<'a>(cause: &herald_bus::Metadata, slot: &Slot<Notes>) -> Limit<'a> {
        static LIMITS: std::sync::LazyLock<RecordLimits> = std::sync::LazyLock::new(|| RecordLimits::of_producer(&herald_bus::KafkaConfig::new("x").set("message.max.bytes", "10000")));
        Limit::of(&LIMITS, "k", cause, slot)
    }

    #[test]
    fn the_cause_ids_every_output_carries_count_against_the_limit() {
        let codec = StateCodec::<Notes>::new().expect("codec");
        let reaction = || Reaction::<Notes>::keep().emit(&OUT, Done { id: "k".into() });
        let slot = Slot::new(Notes::default());
        let short = herald_bus::Metadata::new("x.In", "/t", "k");
        assert!(payloads(&Notes::default(), &reaction(), &codec, limit(&short, &slot)).is_ok());
        // A producer may write any ce_id; outputs carry it as their causation id.
        let mut long = short.clone();
        long.original_id = Some("i".repeat(8_500));
        let refused = payloads(&Notes::default(), &reaction(), &codec, limit(&long, &slot)).expect_err("over the limit");
        assert!(refused.contains("x.Done") && refused.contains("message.max.bytes = 10000"), "{refused}");
    }

    #[test]
    fn the_cause_bytes_are_the_lengths_of_its_ids() {
        let slot = Slot::new(Notes::default());
        let fresh = herald_bus::Metadata::new("x.In", "/t", "k");
        let expected = fresh.ce_id().len() + fresh.correlation().len() + fresh.tracestate.as_ref().map_or(0, String::len);
        assert_eq!(limit(&fresh, &slot).cause_bytes, expected);
        let mut named = fresh.clone();
        (named.original_id, named.correlation_id, named.tracestate) = (Some("A234-1234-1234".into()), None, Some("vendor=x".into()));
        assert_eq!(limit(&named, &slot).cause_bytes, named.ce_id().len() + named.correlation().len() + 8);
    }

    #[test]
    fn a_changelog_record_counts_its_state_and_deadlines() {
        let codec = StateCodec::<Notes>::new().expect("codec");
        let cause = herald_bus::Metadata::new("x.In", "/t", "k");
        let empty = Slot::new(Notes::default());
        let big = Reaction::with_state(Notes { text: "n".repeat(9_000) });
        assert!(payloads(&Notes::default(), &big, &codec, limit(&cause, &empty)).expect_err("state too large").contains("changelog record"));
        // A reaction that only sets a deadline, on a slot whose deadlines are large already.
        let at = chrono::Utc::now();
        let pending = Pending { deadline: Deadline::at("late", at).with_payload("p".repeat(9_000)), correlation_id: "c".into(), set_by: uuid::Uuid::nil() };
        let loaded = Slot::from_parts(Notes::default(), vec![pending], false);
        let another = Reaction::<Notes>::keep().set_deadline(Deadline::at("again", at).with_payload("q".repeat(500)));
        assert!(payloads(&Notes::default(), &another, &codec, limit(&cause, &loaded)).expect_err("deadlines too large").contains("deadlines about"));
        assert!(payloads(&Notes::default(), &another, &codec, limit(&cause, &empty)).is_ok());
    }

    #[test]
    fn a_reaction_that_only_sets_a_deadline_counts_the_state_it_keeps() {
        let codec = StateCodec::<Notes>::new().expect("codec");
        let cause = herald_bus::Metadata::new("x.In", "/t", "k");
        let large = Notes { text: "n".repeat(9_000) };
        let slot = Slot::new(large.clone());
        let deadline = Reaction::<Notes>::keep().set_deadline(Deadline::at("soon", chrono::Utc::now()));
        let refused = payloads(&large, &deadline, &codec, limit(&cause, &slot)).expect_err("state and deadline over the limit");
        assert!(refused.contains("state 900"), "{refused}");
        // Keeping the state with no deadline writes nothing new to the changelog.
        assert!(payloads(&large, &Reaction::<Notes>::keep(), &codec, limit(&cause, &slot)).is_ok());
    }

    /// A state whose serializer fails for one value, as a participant's may.
    #[derive(Debug, Clone, Default, serde::Deserialize, apache_avro::AvroSchema)]
    struct Picky {
        text: String,
    }

    impl serde::Serialize for Picky {
        fn serialize<Z: serde::Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
            use serde::ser::{Error, SerializeStruct};
            if self.text == "unwritable" {
                return Err(Z::Error::custom("this value is not written"));
            }
            let mut record = serializer.serialize_struct("Picky", 1)?;
            record.serialize_field("text", &self.text)?;
            record.end()
        }
    }

    #[test]
    fn a_deadline_on_a_state_that_does_not_encode_is_refused_not_lost() {
        let codec = StateCodec::<Picky>::new().expect("codec");
        let limits = RecordLimits::of_producer(&herald_bus::KafkaConfig::new("x"));
        let cause = herald_bus::Metadata::new("x.In", "/t", "k");
        // A new key's initial() state that does not encode: its changelog record could not
        // be written, and the deadline would be gone after a restart.
        let initial = Picky { text: "unwritable".into() };
        let slot = Slot::new(initial.clone());
        let limit = Limit::of(&limits, "k", &cause, &slot);
        let deadline = Reaction::<Picky>::keep().set_deadline(Deadline::at("soon", chrono::Utc::now()));
        let refused = payloads(&initial, &deadline, &codec, limit).expect_err("refused");
        assert!(refused.contains("does not encode") && refused.contains("not written"), "{refused}");
        // Setting a state that encodes is fine; so is keeping it with no deadline.
        let fixed = Reaction::with_state(Picky { text: "ok".into() }).set_deadline(Deadline::at("soon", chrono::Utc::now()));
        assert!(payloads(&initial, &fixed, &codec, limit).is_ok());
        assert!(payloads(&initial, &Reaction::<Picky>::keep(), &codec, limit).is_ok());
    }
}
