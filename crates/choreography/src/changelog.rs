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
    pub fn encode(&self, slot: &Slot<S>) -> Result<Vec<u8>, ChangelogError> {
        let value = apache_avro::to_value(slot.state()).map_err(|e| ChangelogError::Avro(e.to_string()))?;
        let value = value.resolve(&self.state).map_err(|e| ChangelogError::Avro(e.to_string()))?;
        let mut state = vec![0xC3, 0x01];
        state.extend_from_slice(&self.fingerprint.0);
        state.extend(apache_avro::to_avro_datum(&self.state, value).map_err(|e| ChangelogError::Avro(e.to_string()))?);
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
        apache_avro::to_avro_datum(&self.record, record).map_err(|e| ChangelogError::Avro(e.to_string()))
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

/// Checks that state type `S` has a valid schema and that `sample` survives a changelog
/// round trip unchanged. Call it from a unit test for each participant's state.
///
/// ```
/// #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
/// struct Stock { available: i64, holders: Vec<String> }
/// herald_choreography::changelog::check_state(Stock { available: 3, holders: vec!["o-1".into()] }).unwrap();
/// ```
pub fn check_state<S: Serialize + DeserializeOwned + AvroSchema + PartialEq + std::fmt::Debug + Clone>(sample: S) -> Result<(), String> {
    let codec = StateCodec::<S>::new().map_err(|e| e.to_string())?;
    let slot = Slot::new(sample);
    let back = codec.decode(&codec.encode(&slot).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    if back != slot {
        return Err(format!("the state changed in a changelog round trip:\n  wrote {:?}\n  read  {:?}", slot.state(), back.state()));
    }
    Ok(())
}
