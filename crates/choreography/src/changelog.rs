//! The changelog encoding of a [`Slot`]: what the runtime writes to the participant's
//! compacted changelog topic (key = state key), in the same transaction as the reaction.
//!
//! **Why Avro.** Events are Avro with schemas checked against the Rust types; the state
//! follows the house style for the same reasons: the schema is derived from the type
//! (`#[derive(AvroSchema)]`) and checked at start-up ([`StateCodec::new`]) and in tests
//! ([`check_state`]), the encoding is compact (a changelog is re-read in full when a process
//! takes over partitions), and a state type can evolve by Avro's resolution rules rather
//! than by hope. JSON would be easier to read but has no schema to check an old record
//! against a new type.
//!
//! A record is `herald.choreography.StateRecord` ([`RECORD_SCHEMA`]): the state as an
//! Avro single-object datum (`C3 01`, the 8-byte fingerprint of the state's schema, the
//! datum, so the writer's schema is known when the type changes), the pending deadlines
//! (times as epoch milliseconds, plain `long`s: no logical types, whose canonical form
//! differs between implementations), and the finished flag.

use std::marker::PhantomData;

use apache_avro::types::Value;
use apache_avro::{AvroSchema, Schema};
use chrono::{DateTime, Utc};
use herald_bus::schema::Fingerprint;
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::deadline::{Deadline, Pending};
use crate::slot::Slot;

/// The Avro schema of a changelog record.
pub const RECORD_SCHEMA: &str = r#"{"type":"record","name":"StateRecord","namespace":"herald.choreography","fields":[
  {"name":"state","type":"bytes"},
  {"name":"deadlines","type":{"type":"array","items":{"type":"record","name":"PendingDeadline","fields":[
    {"name":"name","type":"string"},
    {"name":"at_millis","type":"long"},
    {"name":"payload","type":"string"},
    {"name":"correlation_id","type":"string"},
    {"name":"set_by","type":"string"}]}}},
  {"name":"finished","type":"boolean"}]}"#;

/// Encoding or decoding a changelog record failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangelogError {
    /// The state type's derived schema is not valid Avro.
    #[error("the state type's Avro schema is invalid: {0}")]
    Schema(String),
    /// The state does not fit its own schema, or a datum does not fit the record schema.
    #[error("changelog record: {0}")]
    Avro(String),
    /// The record was written with another version of the state's schema.
    #[error("changelog state was written with schema {found}, this process reads {expected}")]
    WriterSchema {
        /// Fingerprint of the writer's schema.
        found: String,
        /// Fingerprint of this process's schema.
        expected: String,
    },
    /// The bytes are not a changelog record.
    #[error("not a changelog record: {0}")]
    Malformed(String),
}

impl ChangelogError {
    /// Whether retrying cannot help (every variant: the bytes or the types are wrong).
    pub fn is_permanent(&self) -> bool {
        true
    }
}

/// Encodes and decodes the slots of state type `S`.
pub struct StateCodec<S> {
    record: Schema,
    state: Schema,
    fingerprint: Fingerprint,
    _state: PhantomData<fn() -> S>,
}

impl<S: Serialize + DeserializeOwned + AvroSchema> StateCodec<S> {
    /// Builds the codec; fails if `S`'s derived schema is not valid.
    pub fn new() -> Result<Self, ChangelogError> {
        let record = Schema::parse_str(RECORD_SCHEMA).map_err(|e| ChangelogError::Schema(e.to_string()))?;
        let state = S::get_schema();
        // Round-trip through the schema's JSON form: a derived schema apache-avro cannot parse back is refused here, not at the first write.
        let state = Schema::parse_str(&state.canonical_form()).map_err(|e| ChangelogError::Schema(e.to_string()))?;
        let fingerprint = Fingerprint::of(&state);
        Ok(StateCodec { record, state, fingerprint, _state: PhantomData })
    }

    /// The fingerprint of the state's schema.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Encodes `slot` as a changelog record.
    ///
    /// The state is written as the publisher writes events
    /// ([`write_datum`](herald_bus::publisher::write_datum): straight from the Rust value,
    /// no intermediate `Value` and no schema resolution per record, where the schema
    /// allows); [`check_state`] shows it gives the bytes of apache-avro's `Value` path. The
    /// record around it, a fixed schema, is written by hand.
    pub fn encode(&self, slot: &Slot<S>) -> Result<Vec<u8>, ChangelogError> {
        let mut state = Vec::with_capacity(64);
        state.extend_from_slice(&[0xC3, 0x01]);
        state.extend_from_slice(&self.fingerprint.0);
        herald_bus::publisher::write_datum(&self.state, slot.state(), &mut state).map_err(|e| ChangelogError::Avro(e.to_string()))?;
        let mut record = Vec::with_capacity(state.len() + 8);
        put_bytes(&mut record, &state);
        let deadlines = slot.deadlines();
        if !deadlines.is_empty() {
            put_long(&mut record, deadlines.len() as i64);
            for p in deadlines {
                put_bytes(&mut record, p.deadline.name.as_bytes());
                put_long(&mut record, p.deadline.at.timestamp_millis());
                put_bytes(&mut record, p.deadline.payload.as_bytes());
                put_bytes(&mut record, p.correlation_id.as_bytes());
                put_bytes(&mut record, p.set_by.to_string().as_bytes());
            }
        }
        put_long(&mut record, 0); // the end of the deadlines' array
        record.push(u8::from(slot.is_finished()));
        Ok(record)
    }

    /// Whether `state` encodes with the state's schema, and in how many bytes (the engine
    /// checks a reaction's new state before it applies it, so one that cannot be written
    /// is refused whole).
    pub fn check(&self, state: &S) -> Result<usize, ChangelogError> {
        let mut scratch = Vec::with_capacity(64);
        herald_bus::publisher::write_datum(&self.state, state, &mut scratch).map_err(|e| ChangelogError::Avro(e.to_string()))?;
        Ok(scratch.len())
    }

    /// Decodes a changelog record.
    pub fn decode(&self, bytes: &[u8]) -> Result<Slot<S>, ChangelogError> {
        let mut reader = bytes;
        let value = apache_avro::from_avro_datum(&self.record, &mut reader, None).map_err(|e| ChangelogError::Malformed(e.to_string()))?;
        if !reader.is_empty() {
            return Err(ChangelogError::Malformed(format!("{} trailing bytes", reader.len())));
        }
        let Value::Record(fields) = value else { return Err(ChangelogError::Malformed("not a record".into())) };
        let (mut state, mut deadlines, mut finished) = (None, Vec::new(), false);
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("state", Value::Bytes(b)) => state = Some(self.decode_state(&b)?),
                ("deadlines", Value::Array(items)) => deadlines = items.into_iter().map(pending).collect::<Result<_, _>>()?,
                ("finished", Value::Boolean(b)) => finished = b,
                (other, _) => return Err(ChangelogError::Malformed(format!("unexpected field {other}"))),
            }
        }
        let state = state.ok_or_else(|| ChangelogError::Malformed("no state".into()))?;
        Ok(Slot::from_parts(state, deadlines, finished))
    }

    fn decode_state(&self, bytes: &[u8]) -> Result<S, ChangelogError> {
        let (header, datum) = bytes.split_at_checked(10).ok_or_else(|| ChangelogError::Malformed("state shorter than its header".into()))?;
        if header[..2] != [0xC3, 0x01] {
            return Err(ChangelogError::Malformed("state is not a single-object datum".into()));
        }
        if header[2..] != self.fingerprint.0 {
            let mut found = [0u8; 8];
            found.copy_from_slice(&header[2..]);
            return Err(ChangelogError::WriterSchema { found: Fingerprint(found).to_string(), expected: self.fingerprint.to_string() });
        }
        let mut reader = datum;
        let value = apache_avro::from_avro_datum(&self.state, &mut reader, None).map_err(|e| ChangelogError::Malformed(e.to_string()))?;
        if !reader.is_empty() {
            return Err(ChangelogError::Malformed(format!("{} trailing bytes after the state", reader.len())));
        }
        apache_avro::from_value::<S>(&value).map_err(|e| ChangelogError::Avro(e.to_string()))
    }
}

/// Avro's `long`: zig-zag, then base-128 varint.
fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro's `bytes` and `string`: the length as a `long`, then the bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

fn pending(value: Value) -> Result<Pending, ChangelogError> {
    let Value::Record(fields) = value else { return Err(ChangelogError::Malformed("deadline is not a record".into())) };
    let (mut name, mut at, mut payload, mut correlation_id, mut set_by) = (None, None, None, None, None);
    for (field, value) in fields {
        match (field.as_str(), value) {
            ("name", Value::String(s)) => name = Some(s),
            ("at_millis", Value::Long(ms)) => at = DateTime::<Utc>::from_timestamp_millis(ms),
            ("payload", Value::String(s)) => payload = Some(s),
            ("correlation_id", Value::String(s)) => correlation_id = Some(s),
            ("set_by", Value::String(s)) => set_by = Uuid::parse_str(&s).ok(),
            (other, _) => return Err(ChangelogError::Malformed(format!("unexpected deadline field {other}"))),
        }
    }
    match (name, at, payload, correlation_id, set_by) {
        (Some(name), Some(at), Some(payload), Some(correlation_id), Some(set_by)) => Ok(Pending { deadline: Deadline { name, at, payload }, correlation_id, set_by }),
        _ => Err(ChangelogError::Malformed("deadline with a missing or invalid field".into())),
    }
}

/// Checks that state type `S` has a valid schema, that `sample` survives a changelog
/// round trip unchanged, and that the engine's state encoding gives the same bytes as
/// apache-avro's `Value` path. Call it from a unit test for each
/// participant's state.
///
/// ```
/// #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
/// struct Stock { available: i64, holders: Vec<String> }
/// herald_choreography::changelog::check_state(Stock { available: 3, holders: vec!["o-1".into()] }).unwrap();
/// ```
pub fn check_state<S: Serialize + DeserializeOwned + AvroSchema + PartialEq + std::fmt::Debug + Clone>(sample: S) -> Result<(), String> {
    let codec = StateCodec::<S>::new().map_err(|e| e.to_string())?;
    let mut written = Vec::new();
    herald_bus::publisher::write_datum(&codec.state, &sample, &mut written).map_err(|e| e.to_string())?;
    let by_value = herald_bus::publisher::datum_by_value(&codec.state, &sample).map_err(|e| e.to_string())?;
    if written != by_value {
        return Err(format!("the engine's state encoding and apache-avro's Value path disagree on {sample:?}:\n  {written:?}\n  {by_value:?}"));
    }
    let slot = Slot::new(sample);
    let back = codec.decode(&codec.encode(&slot).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    if back != slot {
        return Err(format!("the state changed in a changelog round trip:\n  wrote {:?}\n  read  {:?}", slot.state(), back.state()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize, AvroSchema)]
    struct Stock {
        available: i64,
        holders: Vec<String>,
        note: Option<String>,
    }

    /// The record as apache-avro's `Value` path writes it, for comparison.
    fn by_value(codec: &StateCodec<Stock>, slot: &Slot<Stock>) -> Vec<u8> {
        let mut state = vec![0xC3, 0x01];
        state.extend_from_slice(&codec.fingerprint.0);
        state.extend(herald_bus::publisher::datum_by_value(&codec.state, slot.state()).unwrap());
        let deadlines = slot
            .deadlines()
            .iter()
            .map(|p| {
                Value::Record(vec![
                    ("name".into(), Value::String(p.deadline.name.clone())),
                    ("at_millis".into(), Value::Long(p.deadline.at.timestamp_millis())),
                    ("payload".into(), Value::String(p.deadline.payload.clone())),
                    ("correlation_id".into(), Value::String(p.correlation_id.clone())),
                    ("set_by".into(), Value::String(p.set_by.to_string())),
                ])
            })
            .collect();
        let record = Value::Record(vec![("state".into(), Value::Bytes(state)), ("deadlines".into(), Value::Array(deadlines)), ("finished".into(), Value::Boolean(slot.is_finished()))]);
        apache_avro::to_avro_datum(&codec.record, record).unwrap()
    }

    fn pending(name: &str, millis: i64) -> Pending {
        let at = DateTime::<Utc>::from_timestamp_millis(millis).unwrap();
        Pending { deadline: Deadline::at(name, at).with_payload("pay ✓"), correlation_id: "order-7".into(), set_by: Uuid::now_v7() }
    }

    #[test]
    fn records_are_the_bytes_apache_avro_writes_and_read_back() {
        let codec = StateCodec::<Stock>::new().unwrap();
        let stock = Stock { available: -3, holders: vec!["o-1".into(), "ö-2".into()], note: Some("n".into()) };
        let slots = [
            Slot::new(Stock::default()),
            Slot::from_parts(stock.clone(), vec![pending("timeout", 1_700_000_000_123)], false),
            Slot::from_parts(stock, vec![pending("a", -86_400_000), pending("b", 0), pending("", 8_000_000_000_000)], true),
        ];
        for slot in slots {
            let bytes = codec.encode(&slot).unwrap();
            assert_eq!(bytes, by_value(&codec, &slot), "{slot:?}");
            assert_eq!(codec.decode(&bytes).unwrap(), slot);
        }
    }

    #[test]
    fn longs_are_zig_zag_varints_as_avro_writes_them() {
        for n in [0, 1, -1, 63, 64, -64, -65, 8191, 8192, i64::from(i32::MAX), i64::from(i32::MIN), i64::MAX, i64::MIN] {
            let mut ours = Vec::new();
            put_long(&mut ours, n);
            assert_eq!(ours, apache_avro::to_avro_datum(&Schema::Long, Value::Long(n)).unwrap(), "{n}");
        }
    }

    #[test]
    fn check_state_compares_the_serializer_with_the_value_path() {
        check_state(Stock { available: 5, holders: vec!["x".into()], note: None }).unwrap();
    }
}
