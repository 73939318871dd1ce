//! Stored sample events: one JSON file (Avro JSON encoding) next to each schema version.
//!
//! `schemas/shop/orders/OrderPlaced/v1.avsc` keeps `v1.sample.json` beside it. A sample
//! proves the version can encode and decode a real event, and, decoded with today's Rust
//! type as the reader ([`read_as`]), that events written years ago still read.
//!
//! Avro's JSON encoding: records are objects with every field, enums are their symbol,
//! `bytes` and `fixed` are strings whose code points 0–255 are the bytes, a union value
//! is `null` or `{"<branch type name>": value}` (the full name for named types).
//!
//! ```
//! use herald_schema::{Avsc, sample};
//! let schema = Avsc::parse(r#"{"type":"record","name":"P","fields":[
//!     {"name":"id","type":"string"},{"name":"note","type":["null","string"]}]}"#)?;
//! let json = serde_json::json!({"id": "p-1", "note": {"string": "hi"}});
//! let sample = sample::Sample::from_json(&schema, &json)?;
//! assert_eq!(sample.datum, b"\x06p-1\x02\x04hi");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use apache_avro::schema::{Name, ResolvedSchema, Schema};
use apache_avro::types::Value;
use herald_bus::Event;
use serde_json::Value as Json;

use crate::avsc::Avsc;

/// Where the sample of the schema file `avsc` lives: `v1.avsc` → `v1.sample.json`.
pub fn path_for(avsc: &Path) -> PathBuf {
    let stem = avsc.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    avsc.with_file_name(format!("{stem}.sample.json"))
}

/// A sample event, checked against its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The event as Avro values.
    pub value: Value,
    /// The event encoded as an Avro datum with its schema.
    pub datum: Vec<u8>,
}

impl Sample {
    /// Reads `path` and checks it against `schema` (see [`Sample::from_json`]).
    pub fn load(schema: &Avsc, path: &Path) -> Result<Sample, SampleError> {
        let at = |reason: String| SampleError { path: Some(path.to_path_buf()), reason };
        let text = std::fs::read_to_string(path).map_err(|e| at(format!("cannot read: {e}")))?;
        let json: Json = serde_json::from_str(&text).map_err(|e| {
            at(format!("{}:{}: invalid JSON: {}", e.line(), e.column(), crate::avsc::strip_position(&e)))
        })?;
        Self::from_json(schema, &json).map_err(|e| at(e.reason))
    }

    /// Converts `json` (Avro JSON encoding) with `schema`, encodes it, decodes it back and
    /// checks that the round trip changed nothing.
    pub fn from_json(schema: &Avsc, json: &Json) -> Result<Sample, SampleError> {
        let fail = |reason: String| SampleError { path: None, reason };
        let resolved = ResolvedSchema::try_from(schema.schema()).map_err(|e| fail(e.to_string()))?;
        let names = resolved.get_names();
        let value = Converter { names }.value(schema.schema(), json, "").map_err(fail)?;
        let datum = apache_avro::to_avro_datum(schema.schema(), value.clone()).map_err(|e| fail(format!("does not encode: {e}")))?;
        let back = decode(schema.schema(), &datum, None).map_err(fail)?;
        if back != value {
            return Err(fail(format!("does not round-trip: wrote {value:?}, read {back:?}")));
        }
        Ok(Sample { value, datum })
    }
}

/// Decodes `sample` (written with `writer`) as the Rust event type `E`, resolving to
/// `reader` (normally `E`'s own schema); the datum must be consumed exactly.
pub fn read_as<E: Event>(reader: &Avsc, writer: &Avsc, sample: &Sample) -> Result<E, SampleError> {
    let fail = |reason: String| SampleError { path: None, reason };
    let value = decode(writer.schema(), &sample.datum, Some(reader.schema())).map_err(fail)?;
    apache_avro::from_value::<E>(&value).map_err(|e| fail(format!("does not deserialize as {}: {e}", E::TYPE)))
}

fn decode(writer: &Schema, datum: &[u8], reader: Option<&Schema>) -> Result<Value, String> {
    let mut rest = datum;
    let value = apache_avro::from_avro_datum(writer, &mut rest, reader).map_err(|e| format!("does not decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes left after decoding", rest.len()));
    }
    Ok(value)
}

/// A sample that does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
pub struct SampleError {
    /// The sample file, when known.
    pub path: Option<PathBuf>,
    /// What is wrong (with the JSON path of the offending value).
    pub reason: String,
}

struct Converter<'a> {
    names: &'a HashMap<Name, &'a Schema>,
}

impl Converter<'_> {
    fn value(&self, schema: &Schema, json: &Json, at: &str) -> Result<Value, String> {
        let wrong = || format!("`{}`: {json} is not a valid {}", if at.is_empty() { "$" } else { at }, type_name(schema));
        let int = || json.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(wrong);
        let long = || json.as_i64().ok_or_else(wrong);
        Ok(match schema {
            Schema::Null => json.is_null().then_some(Value::Null).ok_or_else(wrong)?,
            Schema::Boolean => Value::Boolean(json.as_bool().ok_or_else(wrong)?),
            Schema::Int => Value::Int(int()?),
            Schema::Long => Value::Long(long()?),
            Schema::Float => Value::Float(json.as_f64().ok_or_else(wrong)? as f32),
            Schema::Double => Value::Double(json.as_f64().ok_or_else(wrong)?),
            Schema::String => Value::String(json.as_str().ok_or_else(wrong)?.to_owned()),
            Schema::Bytes => Value::Bytes(bytes(json).ok_or_else(wrong)?),
            Schema::Fixed(f) => match bytes(json) {
                Some(b) if b.len() == f.size => Value::Fixed(f.size, b),
                _ => return Err(wrong()),
            },
            Schema::Enum(e) => {
                let symbol = json.as_str().ok_or_else(wrong)?;
                let index = e.symbols.iter().position(|s| s == symbol).ok_or_else(wrong)?;
                Value::Enum(u32::try_from(index).map_err(|_| wrong())?, symbol.to_owned())
            }
            Schema::Array(a) => {
                let items = json.as_array().ok_or_else(wrong)?;
                let at = format!("{at}[]");
                Value::Array(items.iter().map(|i| self.value(&a.items, i, &at)).collect::<Result<_, _>>()?)
            }
            Schema::Map(m) => {
                let object = json.as_object().ok_or_else(wrong)?;
                let mut out = HashMap::with_capacity(object.len());
                for (k, v) in object {
                    out.insert(k.clone(), self.value(&m.types, v, &format!("{at}.{k}"))?);
                }
                Value::Map(out)
            }
            Schema::Record(r) => {
                let object = json.as_object().ok_or_else(wrong)?;
                if let Some(extra) = object.keys().find(|k| !r.lookup.contains_key(*k)) {
                    return Err(format!("`{at}.{extra}`: {} has no such field", r.name.fullname(None)));
                }
                let mut fields = Vec::with_capacity(r.fields.len());
                for field in &r.fields {
                    let at = if at.is_empty() { field.name.clone() } else { format!("{at}.{}", field.name) };
                    let v = object.get(&field.name).ok_or_else(|| format!("`{at}`: missing (Avro JSON lists every field)"))?;
                    fields.push((field.name.clone(), self.value(&field.schema, v, &at)?));
                }
                Value::Record(fields)
            }
            Schema::Union(u) => {
                let (index, branch, inner) = if json.is_null() {
                    let index = u.variants().iter().position(|s| *s == Schema::Null).ok_or_else(wrong)?;
                    (index, &Schema::Null, json)
                } else {
                    let object = json.as_object().filter(|o| o.len() == 1).ok_or_else(wrong)?;
                    let (name, inner) = object.iter().next().ok_or_else(wrong)?;
                    let index = u.variants().iter().position(|s| self.branch_name(s) == *name).ok_or_else(|| {
                        format!("`{at}`: the union {} has no branch `{name}`", type_name(schema))
                    })?;
                    (index, &u.variants()[index], inner)
                };
                let index = u32::try_from(index).map_err(|_| wrong())?;
                Value::Union(index, Box::new(self.value(branch, inner, at)?))
            }
            Schema::Ref { name } => {
                let target = self.names.get(name).ok_or_else(|| format!("`{at}`: unknown type {}", name.fullname(None)))?;
                self.value(target, json, at)?
            }
            Schema::Date => Value::Date(int()?),
            Schema::TimeMillis => Value::TimeMillis(int()?),
            Schema::TimeMicros => Value::TimeMicros(long()?),
            Schema::TimestampMillis => Value::TimestampMillis(long()?),
            Schema::TimestampMicros => Value::TimestampMicros(long()?),
            Schema::TimestampNanos => Value::TimestampNanos(long()?),
            Schema::LocalTimestampMillis => Value::LocalTimestampMillis(long()?),
            Schema::LocalTimestampMicros => Value::LocalTimestampMicros(long()?),
            Schema::LocalTimestampNanos => Value::LocalTimestampNanos(long()?),
            Schema::Uuid => Value::Uuid(json.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()).ok_or_else(wrong)?),
            Schema::Decimal(_) => Value::Decimal(apache_avro::Decimal::from(bytes(json).ok_or_else(wrong)?)),
            Schema::Duration => {
                let b: [u8; 12] = bytes(json).and_then(|b| b.try_into().ok()).ok_or_else(wrong)?;
                Value::Duration(apache_avro::Duration::from(b))
            }
            Schema::BigDecimal => return Err(format!("`{at}`: big-decimal samples are not supported")),
        })
    }

    /// The name a union branch has in Avro's JSON encoding.
    fn branch_name(&self, schema: &Schema) -> String {
        match schema {
            Schema::Record(r) => r.name.fullname(None),
            Schema::Enum(e) => e.name.fullname(None),
            Schema::Fixed(f) => f.name.fullname(None),
            Schema::Ref { name } => name.fullname(None),
            Schema::Decimal(d) => self.branch_name(&d.inner),
            other => type_name(other).to_owned(),
        }
    }
}

/// The Avro type name of a schema, logical types by their underlying type.
fn type_name(schema: &Schema) -> &'static str {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int | Schema::Date | Schema::TimeMillis => "int",
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes | Schema::BigDecimal | Schema::Decimal(_) => "bytes",
        Schema::String | Schema::Uuid => "string",
        Schema::Fixed(_) | Schema::Duration => "fixed",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Union(_) => "union",
        Schema::Record(_) => "record",
        Schema::Enum(_) => "enum",
        Schema::Ref { .. } => "named type",
    }
}

/// Avro JSON bytes: each code point 0–255 is one byte.
fn bytes(json: &Json) -> Option<Vec<u8>> {
    json.as_str()?.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(text: &str) -> Avsc {
        Avsc::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let s = schema(
            r#"{"type":"record","name":"All","namespace":"t","fields":[
                {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
                {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"by","type":"bytes"},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
                {"name":"x","type":{"type":"fixed","name":"F","size":2}},
                {"name":"a","type":{"type":"array","items":"E"}},
                {"name":"m","type":{"type":"map","values":["null","F"]}},
                {"name":"day","type":{"type":"int","logicalType":"date"}},
                {"name":"u","type":["null",{"type":"string","logicalType":"uuid"}]}]}"#,
        );
        let sample = Sample::from_json(
            &s,
            &json!({"b": true, "i": -3, "l": 1_i64 << 40, "f": 1.5, "d": 0.25, "by": "\u{00ff}\u{0000}",
                    "e": "B", "x": "ab", "a": ["A", "B"], "m": {"k": {"t.F": "zz"}, "n": null},
                    "day": 19000, "u": {"string": "0f8fad5b-d9cb-469f-a165-70867728950e"}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!sample.datum.is_empty());
    }

    #[test]
    fn mistakes_name_the_json_path() {
        let s = schema(r#"{"type":"record","name":"R","fields":[{"name":"xs","type":{"type":"array","items":"int"}}]}"#);
        let err = Sample::from_json(&s, &json!({"xs": [1, "two"]})).expect_err("string in ints");
        assert_eq!(err.reason, r#"`xs[]`: "two" is not a valid int"#);
        let err = Sample::from_json(&s, &json!({})).expect_err("missing");
        assert!(err.reason.starts_with("`xs`: missing"), "{err}");
        let err = Sample::from_json(&s, &json!({"xs": [], "y": 1})).expect_err("extra");
        assert!(err.reason.contains("no such field"), "{err}");
    }

    #[test]
    fn sample_files_sit_next_to_their_schema() {
        assert_eq!(path_for(Path::new("a/T/v3.avsc")), PathBuf::from("a/T/v3.sample.json"));
    }
}
