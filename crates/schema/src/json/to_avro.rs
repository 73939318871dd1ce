//! JSON to Avro: map a JSON value onto a schema (see the [module docs](super)).

use std::collections::HashMap;
use std::str::FromStr;

use apache_avro::schema::{Name, RecordSchema, ResolvedSchema, Schema, UnionSchema};
use apache_avro::types::Value;
use serde_json::Value as Json;

use super::path::{Path, Segment};
use super::{describe, Error, Problem};

/// Maps `json` onto `schema`, giving the Avro value to encode.
///
/// For many values of one schema, [`JsonEncoder`] resolves the schema's named types once.
pub fn to_avro(schema: &Schema, json: &Json) -> Result<Value, Error> {
    JsonEncoder::new(schema.clone())?.to_avro(json)
}

/// Maps `json` onto `schema` and encodes it as an Avro binary datum.
///
/// For many values of one schema, [`JsonEncoder`] resolves the schema's named types once.
pub fn encode(schema: &Schema, json: &Json) -> Result<Vec<u8>, Error> {
    JsonEncoder::new(schema.clone())?.encode(json)
}

/// A schema ready to map and encode JSON values: its named types resolved once, for every
/// value after (what a server encoding many requests of one event type keeps).
///
/// ```
/// use herald_schema::json::JsonEncoder;
/// let schema = apache_avro::Schema::parse_str(
///     r#"{"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "long"}]}"#,
/// ).unwrap();
/// let encoder = JsonEncoder::new(schema).unwrap();
/// assert_eq!(encoder.encode(&serde_json::json!({"n": 1})).unwrap(), vec![2]); // zig-zag 1
/// let refused = encoder.encode(&serde_json::json!({"n": "one"})).unwrap_err();
/// assert_eq!(refused.path.to_string(), "n");
/// ```
#[derive(Debug, Clone)]
pub struct JsonEncoder {
    schema: Schema,
    /// The named types of `schema`, by full name.
    names: HashMap<Name, Schema>,
}

impl JsonEncoder {
    /// Resolves `schema`'s named types; an error names a reference to a type it lacks.
    pub fn new(schema: Schema) -> Result<Self, Error> {
        let resolved = ResolvedSchema::try_from(&schema).map_err(|e| Error {
            path: Path::root(),
            problem: Problem::UnknownReference(e.to_string()),
        })?;
        let names = resolved.get_names().iter().map(|(name, schema)| (name.clone(), (*schema).clone())).collect();
        Ok(JsonEncoder { schema, names })
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Maps `json` onto the schema, giving the Avro value to encode.
    pub fn to_avro(&self, json: &Json) -> Result<Value, Error> {
        self.to_avro_all(json).map_err(|mut errors| errors.swap_remove(0))
    }

    /// [`JsonEncoder::to_avro`], refusing with every error found (never an empty list):
    /// each field of a record, item of an array and value of a map is checked, and each
    /// unknown field named, where `to_avro` stops at the first (the one listed first
    /// here). Inside a union's branch only the branch's first error is kept.
    ///
    /// ```
    /// use herald_schema::json::JsonEncoder;
    /// let schema = apache_avro::Schema::parse_str(
    ///     r#"{"type": "record", "name": "P", "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}]}"#,
    /// ).unwrap();
    /// let errors = JsonEncoder::new(schema).unwrap().to_avro_all(&serde_json::json!({"a": "x", "b": 2, "c": 3})).unwrap_err();
    /// let paths: Vec<String> = errors.iter().map(|e| e.path.to_string()).collect();
    /// assert_eq!(paths, ["a", "b", "c"]);
    /// ```
    pub fn to_avro_all(&self, json: &Json) -> Result<Value, Vec<Error>> {
        let mut mapper = Mapper { names: &self.names, path: Path::root(), more: Vec::new() };
        match mapper.value(&self.schema, json, Mode::Input) {
            Ok(value) => Ok(value),
            Err(first) => {
                let mut errors = vec![first];
                errors.append(&mut mapper.more);
                Err(errors)
            }
        }
    }

    /// Maps `json` onto the schema and encodes it as an Avro binary datum.
    pub fn encode(&self, json: &Json) -> Result<Vec<u8>, Error> {
        self.encode_all(json).map_err(|mut errors| errors.swap_remove(0))
    }

    /// [`JsonEncoder::encode`], refusing with every error found ([`JsonEncoder::to_avro_all`]).
    pub fn encode_all(&self, json: &Json) -> Result<Vec<u8>, Vec<Error>> {
        let value = self.to_avro_all(json)?;
        // apache-avro validates the value against the schema before it writes it.
        apache_avro::to_avro_datum(&self.schema, value).map_err(|e| vec![Error { path: Path::root(), problem: Problem::Encode(e.to_string()) }])
    }
}

/// How a JSON value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Input from people or tools: Avro's JSON encoding, or plain values for unions.
    Input,
    /// A default from the schema: unions are never wrapped, and a default matches the
    /// union's first branch by preference (the Avro specification says it must).
    Default,
}

struct Mapper<'s> {
    names: &'s HashMap<Name, Schema>,
    path: Path,
    /// Errors found after the first one a call returns (records, arrays and maps check
    /// every part): see [`JsonEncoder::to_avro_all`].
    more: Vec<Error>,
}

/// Keeps the first error of several in `first`, the others in `more`.
fn note(first: &mut Option<Error>, more: &mut Vec<Error>, error: Error) {
    match first {
        None => *first = Some(error),
        Some(_) => more.push(error),
    }
}

impl<'s> Mapper<'s> {

    fn error(&self, problem: Problem) -> Error {
        Error { path: self.path.clone(), problem }
    }

    fn mismatch(&self, schema: &Schema, json: &Json) -> Error {
        self.error(Problem::Mismatch { expected: expected(schema), got: describe(json) })
    }

    fn value(&mut self, schema: &Schema, json: &Json, mode: Mode) -> Result<Value, Error> {
        match schema {
            Schema::Null => match json {
                Json::Null => Ok(Value::Null),
                _ => Err(self.mismatch(schema, json)),
            },
            Schema::Boolean => json.as_bool().map(Value::Boolean).ok_or_else(|| self.mismatch(schema, json)),
            Schema::Int => self.int(schema, json).map(Value::Int),
            Schema::Long => self.long(schema, json).map(Value::Long),
            Schema::Float => {
                let n = self.float(schema, json)?;
                let f = n as f32;
                if n.is_finite() && !f.is_finite() {
                    return Err(self.error(Problem::OutOfRange { expected: "float", got: n.to_string() }));
                }
                Ok(Value::Float(f))
            }
            Schema::Double => self.float(schema, json).map(Value::Double),
            Schema::Bytes => self.bytes(schema, json).map(Value::Bytes),
            Schema::String => json.as_str().map(|s| Value::String(s.to_owned())).ok_or_else(|| self.mismatch(schema, json)),
            Schema::Array(array) => {
                let items = json.as_array().ok_or_else(|| self.mismatch(schema, json))?;
                let mut out = Vec::with_capacity(items.len());
                let mut first = None;
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Segment::Index(i));
                    let mapped = self.value(&array.items, item, mode);
                    self.path.pop();
                    match mapped {
                        Ok(v) => out.push(v),
                        Err(e) => note(&mut first, &mut self.more, e),
                    }
                }
                first.map_or(Ok(Value::Array(out)), Err)
            }
            Schema::Map(map) => {
                let entries = json.as_object().ok_or_else(|| self.mismatch(schema, json))?;
                let mut out = HashMap::with_capacity(entries.len());
                let mut first = None;
                for (key, item) in entries {
                    self.path.push(Segment::Key(key.clone()));
                    let mapped = self.value(&map.types, item, mode);
                    self.path.pop();
                    match mapped {
                        Ok(v) => {
                            out.insert(key.clone(), v);
                        }
                        Err(e) => note(&mut first, &mut self.more, e),
                    }
                }
                first.map_or(Ok(Value::Map(out)), Err)
            }
            Schema::Union(union) => self.union(union, json, mode),
            Schema::Record(record) => self.record(schema, record, json),
            Schema::Enum(e) => {
                let symbol = json.as_str().ok_or_else(|| self.mismatch(schema, json))?;
                match e.symbols.iter().position(|s| s == symbol) {
                    Some(i) => Ok(Value::Enum(i as u32, symbol.to_owned())),
                    None => Err(self.error(Problem::UnknownSymbol {
                        name: e.name.fullname(None),
                        got: symbol.to_owned(),
                        symbols: e.symbols.clone(),
                    })),
                }
            }
            Schema::Fixed(fixed) => {
                let bytes = self.fixed(schema, json, &fixed.name.fullname(None), fixed.size)?;
                Ok(Value::Fixed(fixed.size, bytes))
            }
            Schema::Decimal(decimal) => {
                let bytes = match &*decimal.inner {
                    Schema::Fixed(fixed) => self.fixed(schema, json, &fixed.name.fullname(None), fixed.size)?,
                    _ => self.bytes(schema, json)?,
                };
                Ok(Value::Decimal(apache_avro::Decimal::from(bytes)))
            }
            Schema::BigDecimal => {
                let text = match json {
                    Json::String(s) => s.clone(),
                    Json::Number(n) => n.to_string(),
                    _ => return Err(self.mismatch(schema, json)),
                };
                apache_avro::BigDecimal::from_str(&text)
                    .map(Value::BigDecimal)
                    .map_err(|e| self.error(Problem::Invalid { expected: "big-decimal", reason: format!("{text:?}: {e}") }))
            }
            Schema::Uuid => {
                let text = json.as_str().ok_or_else(|| self.mismatch(schema, json))?;
                let parsed = if text.chars().count() == 16 {
                    // A fixed(16) uuid in Avro's JSON encoding: the 16 bytes as ISO-8859-1.
                    let bytes = self.latin1(text)?;
                    apache_avro::Uuid::from_slice(&bytes).map_err(|e| e.to_string())
                } else {
                    apache_avro::Uuid::parse_str(text).map_err(|e| e.to_string())
                };
                parsed
                    .map(Value::Uuid)
                    .map_err(|reason| self.error(Problem::Invalid { expected: "uuid", reason: format!("{text:?}: {reason}") }))
            }
            Schema::Date => self.int(schema, json).map(Value::Date),
            Schema::TimeMillis => self.int(schema, json).map(Value::TimeMillis),
            Schema::TimeMicros => self.long(schema, json).map(Value::TimeMicros),
            Schema::TimestampMillis => self.long(schema, json).map(Value::TimestampMillis),
            Schema::TimestampMicros => self.long(schema, json).map(Value::TimestampMicros),
            Schema::TimestampNanos => self.long(schema, json).map(Value::TimestampNanos),
            Schema::LocalTimestampMillis => self.long(schema, json).map(Value::LocalTimestampMillis),
            Schema::LocalTimestampMicros => self.long(schema, json).map(Value::LocalTimestampMicros),
            Schema::LocalTimestampNanos => self.long(schema, json).map(Value::LocalTimestampNanos),
            Schema::Duration => {
                let bytes = self.fixed(schema, json, "duration", 12)?;
                let mut array = [0u8; 12];
                array.copy_from_slice(&bytes);
                Ok(Value::Duration(apache_avro::Duration::from(array)))
            }
            Schema::Ref { name } => {
                let names = self.names;
                let target = names.get(name).ok_or_else(|| self.error(Problem::UnknownReference(name.fullname(None))))?;
                self.value(target, json, mode)
            }
        }
    }

    fn int(&self, schema: &Schema, json: &Json) -> Result<i32, Error> {
        let v = self.integer(schema, json, "int")?;
        i32::try_from(v).map_err(|_| self.error(Problem::OutOfRange { expected: "int", got: json.to_string() }))
    }

    fn long(&self, schema: &Schema, json: &Json) -> Result<i64, Error> {
        self.integer(schema, json, "long")
    }

    /// A JSON integer. A number written with a zero fraction (`2500.0`) is one too, as in
    /// JSON Schema 2020-12 (the gateway's OpenAPI documents say `integer`), when it is
    /// exact (within ±2^53); a fraction is a mismatch.
    fn integer(&self, schema: &Schema, json: &Json, expected: &'static str) -> Result<i64, Error> {
        const EXACT: f64 = 9_007_199_254_740_992.0;
        let Json::Number(n) = json else { return Err(self.mismatch(schema, json)) };
        match (n.as_i64(), n.as_f64()) {
            (Some(v), _) => Ok(v),
            (None, Some(f)) if n.is_f64() && f.fract() != 0.0 => Err(self.mismatch(schema, json)),
            (None, Some(f)) if n.is_f64() && f.abs() <= EXACT => Ok(f as i64),
            // Within a long's range, but not every integer there is a float.
            (None, Some(f)) if n.is_f64() && f.abs() < 9.223_372_036_854_776e18 => Err(self.error(Problem::Inexact { expected, got: n.to_string() })),
            _ => Err(self.error(Problem::OutOfRange { expected, got: n.to_string() })),
        }
    }

    fn float(&self, schema: &Schema, json: &Json) -> Result<f64, Error> {
        match json {
            Json::Number(n) => n.as_f64().ok_or_else(|| self.mismatch(schema, json)),
            Json::String(s) if s == "NaN" => Ok(f64::NAN),
            Json::String(s) if s == "Infinity" => Ok(f64::INFINITY),
            Json::String(s) if s == "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(self.mismatch(schema, json)),
        }
    }

    fn bytes(&self, schema: &Schema, json: &Json) -> Result<Vec<u8>, Error> {
        let text = json.as_str().ok_or_else(|| self.mismatch(schema, json))?;
        self.latin1(text)
    }

    fn fixed(&self, schema: &Schema, json: &Json, name: &str, size: usize) -> Result<Vec<u8>, Error> {
        let bytes = self.bytes(schema, json)?;
        if bytes.len() != size {
            return Err(self.error(Problem::FixedSize { name: name.to_owned(), expected: size, got: bytes.len() }));
        }
        Ok(bytes)
    }

    fn latin1(&self, text: &str) -> Result<Vec<u8>, Error> {
        text.chars()
            .map(|c| u8::try_from(c).map_err(|_| self.error(Problem::NotLatin1 { found: c })))
            .collect()
    }

    fn record(&mut self, schema: &Schema, record: &RecordSchema, json: &Json) -> Result<Value, Error> {
        let object = json.as_object().ok_or_else(|| self.mismatch(schema, json))?;
        let mut fields = Vec::with_capacity(record.fields.len());
        let mut used = 0;
        let mut first = None;
        for field in &record.fields {
            let given = object.get(&field.name).or_else(|| {
                field.aliases.iter().flatten().find_map(|alias| object.get(alias))
            });
            self.path.push(Segment::Field(field.name.clone()));
            let mapped = match (given, &field.default) {
                (Some(given), _) => {
                    used += 1;
                    self.value(&field.schema, given, Mode::Input)
                }
                (None, Some(default)) => self.value(&field.schema, default, Mode::Default),
                (None, None) => Err(self.error(Problem::Missing)),
            };
            self.path.pop();
            match mapped {
                Ok(v) => fields.push((field.name.clone(), v)),
                Err(e) => note(&mut first, &mut self.more, e),
            }
        }
        if used < object.len() {
            let known = |key: &str| {
                record.fields.iter().any(|f| f.name == key || f.aliases.iter().flatten().any(|a| a == key))
            };
            let unknown: Vec<String> = object.keys().filter(|k| !known(k)).cloned().collect();
            for unknown in unknown {
                self.path.push(Segment::Field(unknown));
                let error = self.error(Problem::UnknownField {
                    record: record.name.fullname(None),
                    fields: record.fields.iter().map(|f| f.name.clone()).collect(),
                });
                self.path.pop();
                note(&mut first, &mut self.more, error);
            }
        }
        first.map_or(Ok(Value::Record(fields)), Err)
    }

    fn union(&mut self, union: &UnionSchema, json: &Json, mode: Mode) -> Result<Value, Error> {
        let branches = union.variants();
        let names: Vec<String> = branches.iter().map(branch_name).collect();
        let wrap = |i: usize, v: Value| Value::Union(i as u32, Box::new(v));

        if json.is_null() {
            return match branches.iter().position(|b| matches!(b, Schema::Null)) {
                Some(i) => Ok(wrap(i, Value::Null)),
                None => Err(self.error(Problem::NoBranch { branches: names, got: describe(json) })),
            };
        }
        // Avro's JSON encoding: {"<branch name>": value}.
        if mode == Mode::Input
            && let Some((key, inner)) = json.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next())
            && let Some(i) = names.iter().position(|n| n == key)
        {
            return self.value(&branches[i], inner, mode).map(|v| wrap(i, v));
        }
        // Trying branches: the errors of a branch that does not fit are not the body's
        // (only the first one of a sole candidate is kept, below).
        let mark = self.more.len();
        if mode == Mode::Default
            && let Some(first) = branches.first()
        {
            match self.value(first, json, mode) {
                Ok(v) => return Ok(wrap(0, v)),
                Err(_) => self.more.truncate(mark),
            }
        }
        // A plain value: accepted when exactly one branch fits.
        let mut fits = Vec::new();
        let mut errors = Vec::new();
        for (i, branch) in branches.iter().enumerate().filter(|(_, b)| !matches!(b, Schema::Null)) {
            match self.value(branch, json, mode) {
                Ok(v) => fits.push((i, v)),
                Err(e) => {
                    self.more.truncate(mark);
                    errors.push(e);
                }
            }
        }
        match fits.len() {
            1 => {
                let (i, v) = fits.remove(0);
                Ok(wrap(i, v))
            }
            0 if errors.len() == 1 => Err(errors.remove(0)),
            0 => Err(self.error(Problem::NoBranch { branches: names, got: describe(json) })),
            _ => Err(self.error(Problem::Ambiguous {
                fitting: fits.iter().map(|(i, _)| names[*i].clone()).collect(),
                got: describe(json),
            })),
        }
    }
}

/// The name of a union branch in Avro's JSON encoding.
fn branch_name(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".to_owned(),
        Schema::Boolean => "boolean".to_owned(),
        Schema::Int | Schema::Date | Schema::TimeMillis => "int".to_owned(),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long".to_owned(),
        Schema::Float => "float".to_owned(),
        Schema::Double => "double".to_owned(),
        Schema::Bytes | Schema::BigDecimal => "bytes".to_owned(),
        Schema::String | Schema::Uuid => "string".to_owned(),
        Schema::Array(_) => "array".to_owned(),
        Schema::Map(_) => "map".to_owned(),
        Schema::Union(_) => "union".to_owned(),
        Schema::Record(r) => r.name.fullname(None),
        Schema::Enum(e) => e.name.fullname(None),
        Schema::Fixed(f) => f.name.fullname(None),
        Schema::Decimal(d) => branch_name(&d.inner),
        // apache-avro keeps no name for a duration's fixed.
        Schema::Duration => "duration".to_owned(),
        Schema::Ref { name } => name.fullname(None),
    }
}

/// The Avro type as error messages name it: `long`, `record shop.orders.OrderLine`.
fn expected(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        Schema::Decimal(d) => format!("decimal ({} as an ISO-8859-1 string)", branch_name(&d.inner)),
        Schema::BigDecimal => "big-decimal (a decimal string)".to_owned(),
        Schema::Uuid => "uuid (a string)".to_owned(),
        Schema::Date => "date (int)".to_owned(),
        Schema::TimeMillis => "time-millis (int)".to_owned(),
        Schema::TimeMicros => "time-micros (long)".to_owned(),
        Schema::TimestampMillis => "timestamp-millis (long)".to_owned(),
        Schema::TimestampMicros => "timestamp-micros (long)".to_owned(),
        Schema::TimestampNanos => "timestamp-nanos (long)".to_owned(),
        Schema::LocalTimestampMillis => "local-timestamp-millis (long)".to_owned(),
        Schema::LocalTimestampMicros => "local-timestamp-micros (long)".to_owned(),
        Schema::LocalTimestampNanos => "local-timestamp-nanos (long)".to_owned(),
        Schema::Duration => "duration (12-byte fixed)".to_owned(),
        Schema::Bytes => "bytes (an ISO-8859-1 string)".to_owned(),
        other => branch_name(other),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::json::to_json;

    const EVERYTHING: &str = r#"{"type": "record", "name": "Everything", "namespace": "t", "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "by", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "arr", "type": {"type": "array", "items": "int"}},
        {"name": "m", "type": {"type": "map", "values": "long"}},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "rec", "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}},
        {"name": "again", "type": "Inner"},
        {"name": "recs", "type": {"type": "array", "items": "Inner"}},
        {"name": "opt", "type": ["null", "string"]},
        {"name": "date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tsu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "lts", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "uuid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "decfx", "type": {"type": "fixed", "name": "Money", "size": 4, "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "dur", "type": {"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}}
    ]}"#;

    fn schema(text: &str) -> Schema {
        Schema::parse_str(text).unwrap_or_else(|e| panic!("test schema: {e}"))
    }

    fn everything() -> Json {
        json!({
            "n": null, "b": true, "i": -2147483648, "l": 9007199254740993_i64, "f": 1.5, "d": -0.25,
            "by": "\u{0000}A\u{00ff}", "s": "héllo", "arr": [1, 2, 3], "m": {"a": 1, "b": -1},
            "e": "GREEN", "fx": "ab\u{0001}\u{00fe}", "rec": {"x": 1}, "again": {"x": 2},
            "recs": [{"x": 3}, {"x": 4}], "opt": "here", "date": 19000, "tm": 1000, "tu": 1000000,
            "ts": 1700000000000_i64, "tsu": 1700000000000000_i64, "lts": 5,
            "uuid": "550e8400-e29b-41d4-a716-446655440000", "dec": "\u{0004}\u{00d2}",
            "decfx": "\u{0000}\u{0000}\u{0004}\u{00d2}", "dur": "\u{0001}\u{0000}\u{0000}\u{0000}\u{0002}\u{0000}\u{0000}\u{0000}\u{0003}\u{0000}\u{0000}\u{0000}"
        })
    }

    fn problem(schema: &Schema, json: Json) -> (String, Problem) {
        match to_avro(schema, &json) {
            Ok(v) => panic!("{json} must not fit, but mapped to {v:?}"),
            Err(e) => (e.path.to_string(), e.problem),
        }
    }

    #[test]
    fn every_avro_type_maps_encodes_and_decodes_back_to_the_same_json() {
        let schema = schema(EVERYTHING);
        let input = everything();
        let datum = encode(&schema, &input).expect("fits");
        let decoded = apache_avro::from_avro_datum(&schema, &mut datum.as_slice(), None).expect("decodes");
        assert_eq!(to_json(&decoded), input);
    }

    #[test]
    fn logical_types_become_their_avro_values() {
        let schema = schema(EVERYTHING);
        let Value::Record(fields) = to_avro(&schema, &everything()).expect("fits") else { panic!("a record") };
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).expect("field");
        assert_eq!(field("date"), Value::Date(19000));
        assert_eq!(field("ts"), Value::TimestampMillis(1700000000000));
        assert_eq!(field("tsu"), Value::TimestampMicros(1700000000000000));
        assert_eq!(field("tu"), Value::TimeMicros(1000000));
        assert_eq!(field("uuid"), Value::Uuid(apache_avro::Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").expect("uuid")));
        assert_eq!(field("dec"), Value::Decimal(apache_avro::Decimal::from(vec![0x04, 0xd2])));
        assert_eq!(field("e"), Value::Enum(1, "GREEN".into()));
        assert_eq!(field("fx"), Value::Fixed(4, vec![b'a', b'b', 1, 0xfe]));
        assert_eq!(field("by"), Value::Bytes(vec![0, b'A', 0xff]));
        assert_eq!(field("opt"), Value::Union(1, Box::new(Value::String("here".into()))));
        assert_eq!(field("again"), Value::Record(vec![("x".into(), Value::Int(2))]));
    }

    #[test]
    fn big_decimals_are_decimal_strings() {
        let schema = schema(r#"{"type": "bytes", "logicalType": "big-decimal"}"#);
        let value = to_avro(&schema, &json!("12.50")).expect("fits");
        assert_eq!(to_json(&value), json!("12.50"));
        let datum = encode(&schema, &json!(3.25)).expect("a number fits too");
        let back = apache_avro::from_avro_datum(&schema, &mut datum.as_slice(), None).expect("decodes");
        assert_eq!(to_json(&back), json!("3.25"));
        assert!(matches!(problem(&schema, json!("twelve")).1, Problem::Invalid { expected: "big-decimal", .. }));
    }

    #[test]
    fn unions_take_avro_json_encoding_and_plain_values() {
        let schema = schema(
            r#"{"type": "record", "name": "U", "namespace": "t", "fields": [{"name": "u", "type": ["null", "string",
                {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]},
                {"type": "array", "items": "long"}]}]}"#,
        );
        let branch = |json: Json| match to_avro(&schema, &json!({ "u": json })) {
            Ok(Value::Record(fields)) => match &fields[0].1 {
                Value::Union(i, _) => *i,
                other => panic!("not a union: {other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(branch(json!(null)), 0);
        assert_eq!(branch(json!({"string": "x"})), 1);
        assert_eq!(branch(json!("x")), 1);
        assert_eq!(branch(json!({"t.Inner": {"x": 1}})), 2);
        assert_eq!(branch(json!({"x": 1})), 2);
        assert_eq!(branch(json!({"array": [1, 2]})), 3);
        assert_eq!(branch(json!([1, 2])), 3);
        let (path, p) = problem(&schema, json!({"u": 5}));
        assert_eq!(path, "u");
        assert!(matches!(p, Problem::NoBranch { ref got, .. } if got == "number 5"), "{p}");
    }

    #[test]
    fn a_nullable_union_reports_the_error_of_its_one_branch() {
        let schema = schema(r#"{"type": "record", "name": "R", "fields": [{"name": "note", "type": ["null", "string"]}]}"#);
        let err = to_avro(&schema, &json!({"note": 5})).expect_err("a number is not a string");
        assert_eq!(err.to_string(), "field note: expected string, got number 5");
    }

    #[test]
    fn a_plain_value_that_fits_several_branches_is_ambiguous() {
        let schema = schema(r#"["null", "int", "long"]"#);
        let (_, p) = problem(&schema, json!(5));
        assert_eq!(p, Problem::Ambiguous { fitting: vec!["int".into(), "long".into()], got: "number 5".into() });
        assert!(p.to_string().contains(r#"{"int": ...}"#), "{p}");
        assert_eq!(to_avro(&schema, &json!({"long": 5})).expect("named"), Value::Union(2, Box::new(Value::Long(5))));
        // Too big for int: only long fits.
        assert_eq!(to_avro(&schema, &json!(5_000_000_000_i64)).expect("fits"), Value::Union(2, Box::new(Value::Long(5_000_000_000))));
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let schema = schema(
            r#"{"type": "record", "name": "D", "namespace": "t", "fields": [
                {"name": "id", "type": "string"},
                {"name": "count", "type": "int", "default": 7},
                {"name": "note", "type": ["null", "string"], "default": null},
                {"name": "label", "type": ["string", "null"], "default": "none"},
                {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
                {"name": "raw", "type": "bytes", "default": "\u00ff"},
                {"name": "colour", "type": {"type": "enum", "name": "C", "symbols": ["RED", "BLUE"]}, "default": "BLUE"},
                {"name": "inner", "type": {"type": "record", "name": "I", "fields": [
                    {"name": "x", "type": "int"}, {"name": "y", "type": ["null", "long"], "default": null}]}, "default": {"x": 1}}
            ]}"#,
        );
        let value = to_avro(&schema, &json!({"id": "a"})).expect("defaults fill the rest");
        assert_eq!(
            to_json(&value),
            json!({"id": "a", "count": 7, "note": null, "label": "none", "tags": [], "raw": "\u{00ff}", "colour": "BLUE", "inner": {"x": 1, "y": null}})
        );
        let Value::Record(fields) = value else { panic!("a record") };
        assert_eq!(fields[3].1, Value::Union(0, Box::new(Value::String("none".into()))));
        encode(&schema, &json!({"id": "a"})).expect("the defaults encode");

        let (path, p) = problem(&schema, json!({"count": 1}));
        assert_eq!((path.as_str(), p), ("id", Problem::Missing));
    }

    #[test]
    fn numbers_must_fit_their_type() {
        let int = schema(r#""int""#);
        assert_eq!(to_avro(&int, &json!(2147483647)).expect("max"), Value::Int(i32::MAX));
        for too_big in [json!(2147483648_i64), json!(-2147483649_i64)] {
            assert!(matches!(problem(&int, too_big).1, Problem::OutOfRange { expected: "int", .. }));
        }
        assert!(matches!(problem(&int, json!(1.5)).1, Problem::Mismatch { .. }));
        // A zero fraction is an integer (JSON Schema 2020-12), when exact.
        assert_eq!(to_avro(&int, &json!(-7.0)).expect("fits"), Value::Int(-7));
        assert!(matches!(problem(&int, json!(3e9)).1, Problem::OutOfRange { expected: "int", .. }));
        assert!(matches!(problem(&int, json!("1")).1, Problem::Mismatch { .. }));
        let long = schema(r#""long""#);
        assert!(matches!(problem(&long, json!(u64::MAX)).1, Problem::OutOfRange { expected: "long", .. }));
        assert_eq!(to_avro(&long, &json!(2500.0)).expect("fits"), Value::Long(2500));
        assert!(matches!(problem(&long, json!(1e300)).1, Problem::OutOfRange { expected: "long", .. }));
        // In range, but a float there may not be the integer meant (it said "out of range").
        let (_, inexact) = problem(&long, json!(1e18));
        assert!(matches!(inexact, Problem::Inexact { expected: "long", .. }), "{inexact}");
        assert!(inexact.to_string().contains("write the long as an integer"), "{inexact}");
        assert_eq!(to_avro(&long, &json!(1_000_000_000_000_000_000_i64)).expect("as an integer"), Value::Long(1_000_000_000_000_000_000));
        let float = schema(r#""float""#);
        assert!(matches!(problem(&float, json!(1e300)).1, Problem::OutOfRange { expected: "float", .. }));
        let Value::Double(nan) = to_avro(&schema(r#""double""#), &json!("NaN")).expect("NaN") else { panic!() };
        assert!(nan.is_nan());
        assert_eq!(to_avro(&float, &json!("-Infinity")).expect("inf"), Value::Float(f32::NEG_INFINITY));
    }

    #[test]
    fn wrong_values_name_the_field_path() {
        let schema = schema(include_str!("../../../../schemas/shop/orders/OrderPlaced/v1.avsc"));
        let order = |total: Json, quantity: Json| {
            json!({"order_id": "o-1", "customer_id": "c-1", "total_cents": total, "currency": "EUR",
                   "lines": [{"sku": "a", "quantity": 1, "unit_price_cents": 5}, {"sku": "b", "quantity": quantity, "unit_price_cents": 5}]})
        };
        encode(&schema, &order(json!(10), json!(1))).expect("a valid order; note defaults to null");
        let err = to_avro(&schema, &order(json!("abc"), json!(1))).expect_err("total is a string");
        assert_eq!(err.to_string(), r#"field total_cents: expected long, got string "abc""#);
        let err = to_avro(&schema, &order(json!(10), json!("two"))).expect_err("quantity is a string");
        assert_eq!(err.to_string(), r#"field lines[1].quantity: expected int, got string "two""#);
        let err = to_avro(&schema, &json!([1])).expect_err("not an object");
        assert_eq!(err.to_string(), "expected record shop.orders.OrderPlaced, got array of 1");
        let mut typo = order(json!(10), json!(1));
        typo["totl_cents"] = json!(1);
        let err = to_avro(&schema, &typo).expect_err("unknown field");
        assert_eq!(err.path.to_string(), "totl_cents");
        assert!(matches!(err.problem, Problem::UnknownField { ref record, .. } if record == "shop.orders.OrderPlaced"));
    }

    #[test]
    fn map_entries_enums_and_fixed_sizes_are_checked() {
        let schema = schema(
            r#"{"type": "record", "name": "M", "fields": [
                {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "int"}}},
                {"name": "e", "type": {"type": "enum", "name": "E", "namespace": "t", "symbols": ["A", "B"]}, "default": "A"},
                {"name": "f", "type": {"type": "fixed", "name": "F", "size": 2}, "default": "ab"}
            ]}"#,
        );
        let (path, p) = problem(&schema, json!({"m": {"k": [1, "x"]}}));
        assert_eq!(path, r#"m["k"][1]"#);
        assert!(matches!(p, Problem::Mismatch { .. }));
        let (path, p) = problem(&schema, json!({"m": {}, "e": "C"}));
        assert_eq!(path, "e");
        assert_eq!(p.to_string(), r#""C" is not a symbol of t.E (symbols: A, B)"#);
        let (path, p) = problem(&schema, json!({"m": {}, "f": "abc"}));
        assert_eq!((path.as_str(), p), ("f", Problem::FixedSize { name: "F".into(), expected: 2, got: 3 }));
        let (_, p) = problem(&schema, json!({"m": {}, "f": "a€"}));
        assert_eq!(p, Problem::NotLatin1 { found: '€' });
    }

    #[test]
    fn uuids_are_checked() {
        let schema = schema(r#"{"type": "string", "logicalType": "uuid"}"#);
        assert!(matches!(problem(&schema, json!("not-a-uuid")).1, Problem::Invalid { expected: "uuid", .. }));
    }
}
