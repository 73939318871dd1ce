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
const FRAMING_BYTES: usize = 2048;

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

/// The payloads of `reaction`'s events, in order (Avro single-object encoding), once its
/// state, if it sets one, is known to encode with `state`; otherwise what does not encode.
/// An event or a changelog record that would be larger than `limit` allows does not
/// either: the producer would refuse it, and the transaction holding it would abort on
/// every try. (A reaction that sets deadlines but no state is checked without its state,
/// whose size is not known here.)
pub(super) fn payloads<S: Serialize + serde::de::DeserializeOwned + AvroSchema>(reaction: &Reaction<S>, state: &StateCodec<S>, limit: Limit<'_>) -> Result<Vec<Vec<u8>>, String> {
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
        None => None,
    };
    if state_bytes.is_some() || new_deadlines > 0 {
        let size = state_bytes.unwrap_or(0) + limit.key_len + limit.pending_bytes + new_deadlines + FRAMING_BYTES;
        let max = limit.limits.changelog();
        if size > max {
            return Err(format!(
                "its changelog record (state {} bytes, deadlines about {} bytes) would be over {}",
                state_bytes.map_or_else(|| "unchanged".to_owned(), |b| b.to_string()),
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
        assert!(payloads(&reaction(), &codec, limit(&short, &slot)).is_ok());
        // A producer may write any ce_id; outputs carry it as their causation id.
        let mut long = short.clone();
        long.original_id = Some("i".repeat(8_500));
        let refused = payloads(&reaction(), &codec, limit(&long, &slot)).expect_err("over the limit");
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
        assert!(payloads(&big, &codec, limit(&cause, &empty)).expect_err("state too large").contains("changelog record"));
        // A reaction that only sets a deadline, on a slot whose deadlines are large already.
        let at = chrono::Utc::now();
        let pending = Pending { deadline: Deadline::at("late", at).with_payload("p".repeat(9_000)), correlation_id: "c".into(), set_by: uuid::Uuid::nil() };
        let loaded = Slot::from_parts(Notes::default(), vec![pending], false);
        let another = Reaction::<Notes>::keep().set_deadline(Deadline::at("again", at).with_payload("q".repeat(500)));
        assert!(payloads(&another, &codec, limit(&cause, &loaded)).expect_err("deadlines too large").contains("deadlines about"));
        assert!(payloads(&another, &codec, limit(&cause, &empty)).is_ok());
    }
}
