//! Avro schemas as JSON Schema (OpenAPI 3.1), describing the JSON the gateway accepts:
//! the plain JSON of `herald_schema::json` (a union as its plain value, logical types as
//! their underlying type). Named types become components, referenced by full name.

use std::collections::BTreeMap;

use apache_avro::schema::{RecordSchema, Schema};
use serde_json::{json, Map, Value};

use crate::config::Fill;

/// Collects named types into `components` while describing schemas.
#[derive(Debug, Default)]
pub struct Describer {
    /// Named types by full name.
    pub components: BTreeMap<String, Value>,
}

impl Describer {
    /// The JSON Schema of a route's body: the record, with filled fields described as
    /// server-side (`uuid7` optional, `now` and `principal` read-only and ignored), and the
    /// key field (`key_field`, when the key comes from the body) a non-empty string, as the
    /// gateway requires.
    pub fn body(&mut self, record: &Schema, fill: &BTreeMap<String, Fill>, key_field: Option<&str>) -> Value {
        let Schema::Record(r) = record else { return self.describe(record) };
        let mut object = self.record(r);
        if let Some(property) = key_field.and_then(|k| object["properties"].get_mut(k))
            && property["type"] == "string"
        {
            property["minLength"] = Value::from(1);
        }
        let required: Vec<Value> = object["required"].as_array().cloned().unwrap_or_default().into_iter().filter(|f| f.as_str().is_some_and(|f| !fill.contains_key(f))).collect();
        object["required"] = Value::Array(required);
        for (field, how) in fill {
            if let Some(property) = object["properties"].get_mut(field) {
                let note = match how {
                    Fill::Uuid7 => "A UUIDv7 is generated when absent.",
                    Fill::Now => "Set by the gateway to its current time (epoch milliseconds); a value sent is replaced.",
                    Fill::Principal => "Set by the gateway to the authenticated principal's id; a value sent is replaced.",
                };
                property["description"] = Value::String(note.to_owned());
                if *how != Fill::Uuid7 {
                    property["readOnly"] = Value::Bool(true);
                }
            }
        }
        object
    }

    fn record(&mut self, r: &RecordSchema) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in &r.fields {
            let mut schema = self.describe(&field.schema);
            if let (Some(doc), Some(object)) = (&field.doc, schema.as_object_mut()) {
                object.insert("description".to_owned(), Value::String(doc.clone()));
            }
            if field.default.is_none() {
                required.push(Value::String(field.name.clone()));
            }
            properties.insert(field.name.clone(), schema);
        }
        let mut object = json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
        if let Some(doc) = &r.doc {
            object["description"] = Value::String(doc.clone());
        }
        object
    }

    /// The JSON Schema of `schema`.
    pub fn describe(&mut self, schema: &Schema) -> Value {
        match schema {
            Schema::Null => json!({"type": "null"}),
            Schema::Boolean => json!({"type": "boolean"}),
            Schema::Int => json!({"type": "integer", "format": "int32"}),
            Schema::Long => json!({"type": "integer", "format": "int64"}),
            Schema::Float | Schema::Double => json!({"type": "number"}),
            Schema::Bytes | Schema::Fixed(_) | Schema::Decimal(_) | Schema::Duration => {
                json!({"type": "string", "description": "bytes as an ISO-8859-1 string"})
            }
            Schema::String => json!({"type": "string"}),
            Schema::Uuid => json!({"type": "string", "format": "uuid"}),
            Schema::BigDecimal => json!({"type": "string", "description": "a decimal number, for example \"12.50\""}),
            Schema::Date => json!({"type": "integer", "format": "int32", "description": "days since 1970-01-01"}),
            Schema::TimeMillis => json!({"type": "integer", "format": "int32", "description": "milliseconds after midnight"}),
            Schema::TimeMicros => json!({"type": "integer", "format": "int64", "description": "microseconds after midnight"}),
            Schema::TimestampMillis | Schema::LocalTimestampMillis => json!({"type": "integer", "format": "int64", "description": "epoch milliseconds"}),
            Schema::TimestampMicros | Schema::LocalTimestampMicros => json!({"type": "integer", "format": "int64", "description": "epoch microseconds"}),
            Schema::TimestampNanos | Schema::LocalTimestampNanos => json!({"type": "integer", "format": "int64", "description": "epoch nanoseconds"}),
            Schema::Array(a) => json!({"type": "array", "items": self.describe(&a.items)}),
            Schema::Map(m) => json!({"type": "object", "additionalProperties": self.describe(&m.types)}),
            Schema::Union(u) => json!({"anyOf": u.variants().iter().map(|v| self.describe(v)).collect::<Vec<_>>()}),
            Schema::Record(r) => {
                let name = r.name.fullname(None);
                if !self.components.contains_key(&name) {
                    // Placeholder first: a recursive record refers to itself.
                    self.components.insert(name.clone(), Value::Null);
                    let described = self.record(r);
                    self.components.insert(name.clone(), described);
                }
                reference(&name)
            }
            Schema::Enum(e) => {
                let name = e.name.fullname(None);
                self.components.insert(name.clone(), json!({"type": "string", "enum": e.symbols}));
                reference(&name)
            }
            Schema::Ref { name } => reference(&name.fullname(None)),
        }
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}
