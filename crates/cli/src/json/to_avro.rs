//! JSON to Avro: map a JSON value onto a schema (see the [module docs](super)).

use std::collections::HashMap;
use std::str::FromStr;

use apache_avro::schema::{Name, RecordSchema, ResolvedSchema, Schema, UnionSchema};
use apache_avro::types::Value;
use serde_json::Value as Json;

use super::path::{Path, Segment};
use super::{describe, Error, Problem};

/// Maps `json` onto `schema`, giving the Avro value to encode.
pub fn to_avro(schema: &Schema, json: &Json) -> Result<Value, Error> {
    let mut mapper = Mapper::new(schema)?;
    mapper.value(schema, json, Mode::Input)
}

/// Maps `json` onto `schema` and encodes it as an Avro binary datum (validated first).
pub fn encode(schema: &Schema, json: &Json) -> Result<Vec<u8>, Error> {
    let value = to_avro(schema, json)?;
    let encode_error = |reason: String| Error { path: Path::root(), problem: Problem::Encode(reason) };
    if !value.validate(schema) {
        return Err(encode_error("the mapped value does not validate against the schema".to_owned()));
    }
    apache_avro::to_avro_datum(schema, value).map_err(|e| encode_error(e.to_string()))
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
    names: HashMap<Name, &'s Schema>,
    path: Path,
}

impl<'s> Mapper<'s> {
    fn new(schema: &'s Schema) -> Result<Self, Error> {
        let resolved = ResolvedSchema::try_from(schema).map_err(|e| Error {
            path: Path::root(),
            problem: Problem::UnknownReference(e.to_string()),
        })?;
        Ok(Mapper { names: resolved.get_names().clone(), path: Path::root() })
    }

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
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Segment::Index(i));
                    let mapped = self.value(&array.items, item, mode);
                    self.path.pop();
                    out.push(mapped?);
                }
                Ok(Value::Array(out))
            }
            Schema::Map(map) => {
                let entries = json.as_object().ok_or_else(|| self.mismatch(schema, json))?;
                let mut out = HashMap::with_capacity(entries.len());
                for (key, item) in entries {
                    self.path.push(Segment::Key(key.clone()));
                    let mapped = self.value(&map.types, item, mode);
                    self.path.pop();
                    out.insert(key.clone(), mapped?);
                }
                Ok(Value::Map(out))
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
                let target = *self
                    .names
                    .get(name)
                    .ok_or_else(|| self.error(Problem::UnknownReference(name.fullname(None))))?;
                self.value(target, json, mode)
            }
        }
    }

    fn int(&self, schema: &Schema, json: &Json) -> Result<i32, Error> {
        let Json::Number(n) = json else { return Err(self.mismatch(schema, json)) };
        if n.is_f64() {
            return Err(self.mismatch(schema, json));
        }
        n.as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| self.error(Problem::OutOfRange { expected: "int", got: n.to_string() }))
    }

    fn long(&self, schema: &Schema, json: &Json) -> Result<i64, Error> {
        let Json::Number(n) = json else { return Err(self.mismatch(schema, json)) };
        if n.is_f64() {
            return Err(self.mismatch(schema, json));
        }
        n.as_i64().ok_or_else(|| self.error(Problem::OutOfRange { expected: "long", got: n.to_string() }))
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
            fields.push((field.name.clone(), mapped?));
        }
        if used < object.len() {
            let known = |key: &str| {
                record.fields.iter().any(|f| f.name == key || f.aliases.iter().flatten().any(|a| a == key))
            };
            if let Some(unknown) = object.keys().find(|k| !known(k)) {
                self.path.push(Segment::Field(unknown.clone()));
                let error = self.error(Problem::UnknownField {
                    record: record.name.fullname(None),
                    fields: record.fields.iter().map(|f| f.name.clone()).collect(),
                });
                self.path.pop();
                return Err(error);
            }
        }
        Ok(Value::Record(fields))
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
        if mode == Mode::Default
            && let Some(first) = branches.first()
            && let Ok(v) = self.value(first, json, mode)
        {
            return Ok(wrap(0, v));
        }
        // A plain value: accepted when exactly one branch fits.
        let mut fits = Vec::new();
        let mut errors = Vec::new();
        for (i, branch) in branches.iter().enumerate().filter(|(_, b)| !matches!(b, Schema::Null)) {
            match self.value(branch, json, mode) {
                Ok(v) => fits.push((i, v)),
                Err(e) => errors.push(e),
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
