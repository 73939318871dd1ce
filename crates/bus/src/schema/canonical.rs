//! The Avro specification's Parsing Canonical Form (PCF), computed from a schema's JSON.
//!
//! The fingerprint in single-object encoding is the CRC-64-AVRO of this form, so it must be
//! byte for byte what every other Avro library writes. apache-avro's own
//! `Schema::canonical_form` keeps logical types as `{"type":"long"}` where the spec and
//! Java's `SchemaNormalization` write `"long"` (AVRO-4004), does not inherit namespaces
//! into nested names, and keeps `precision` and `scale`; hence this module.
//!
//! The spec's rules, each applied here:
//! - **PRIMITIVES**: a primitive schema becomes its name: `{"type":"long",
//!   "logicalType":"timestamp-millis"}` is `"long"`.
//! - **FULLNAMES**: names become full names (a dotted `name` is one already; otherwise the
//!   `namespace` attribute, or the enclosing named type's namespace); `namespace` goes.
//! - **STRIP**: only `name`, `type`, `fields`, `symbols`, `items`, `values` and `size`
//!   stay (no `doc`, `aliases`, `default`, `order`, `logicalType`, other properties).
//! - **ORDER**: in that order. **STRINGS**: strings as UTF-8, escaped only where JSON
//!   needs it. **INTEGERS**: `size` without quotes or leading zeros. **WHITESPACE**: none.
//!
//! A named type is written in full where it first appears and by full name afterwards,
//! as Java does, which also ends recursion.
//!
//! ```
//! use herald_bus::schema::canonical::parsing_canonical_form;
//! let schema = serde_json::json!({"type": "record", "name": "Placed", "namespace": "shop",
//!     "doc": "dropped", "fields": [
//!         {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
//!         {"name": "next", "type": ["null", "Placed"], "default": null}]});
//! assert_eq!(
//!     parsing_canonical_form(&schema)?,
//!     r#"{"name":"shop.Placed","type":"record","fields":[{"name":"at","type":"long"},{"name":"next","type":["null","shop.Placed"]}]}"#
//! );
//! # Ok::<(), herald_bus::schema::canonical::CanonicalError>(())
//! ```

use std::collections::HashSet;

use serde_json::{Map, Value};

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// The JSON is not an Avro schema the canonical form can be written for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// A part of the schema has the wrong shape (a record without fields, a fixed
    /// without a size, a number where a schema belongs, ...).
    #[error("invalid Avro schema: {0}")]
    Invalid(String),
    /// A type name that is neither a primitive nor a named type defined before it.
    #[error("unknown type name `{0}`")]
    UnknownName(String),
}

/// The Parsing Canonical Form of the schema `json`, per the Avro specification.
pub fn parsing_canonical_form(json: &Value) -> Result<String, CanonicalError> {
    write(json, true)
}

/// The form of JSON that apache-avro wrote for a parsed schema: there every name is
/// already resolved (a named type without `namespace` is in the null namespace, a
/// reference is a full name), so nothing inherits the enclosing namespace.
pub(crate) fn parsing_canonical_form_of_resolved(json: &Value) -> Result<String, CanonicalError> {
    write(json, false)
}

fn write(json: &Value, inherit: bool) -> Result<String, CanonicalError> {
    let mut writer = Writer { out: String::new(), defined: HashSet::new(), inherit };
    writer.schema(json, "")?;
    Ok(writer.out)
}

struct Writer {
    out: String,
    /// Full names written so far: later occurrences are written by name.
    defined: HashSet<String>,
    /// Whether names inherit the enclosing namespace (schema text) or are resolved.
    inherit: bool,
}

fn invalid(reason: impl Into<String>) -> CanonicalError {
    CanonicalError::Invalid(reason.into())
}

/// `name` qualified by `namespace` (empty: the null namespace), unless already dotted.
fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() { name.to_owned() } else { format!("{namespace}.{name}") }
}

impl Writer {
    /// Writes one schema; `namespace` is the enclosing one (empty for none).
    fn schema(&mut self, json: &Value, namespace: &str) -> Result<(), CanonicalError> {
        match json {
            Value::String(name) => self.reference(name, namespace),
            Value::Array(branches) => {
                self.out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.schema(branch, namespace)?;
                }
                self.out.push(']');
                Ok(())
            }
            Value::Object(object) => self.object(object, namespace),
            other => Err(invalid(format!("expected a schema (string, object or array), found `{other}`"))),
        }
    }

    /// A primitive, or a reference to a named type defined earlier.
    fn reference(&mut self, name: &str, namespace: &str) -> Result<(), CanonicalError> {
        if PRIMITIVES.contains(&name) {
            return self.string(name);
        }
        let full = full_name(name, namespace);
        if !self.defined.contains(&full) {
            return Err(CanonicalError::UnknownName(full));
        }
        self.string(&full)
    }

    fn object(&mut self, object: &Map<String, Value>, namespace: &str) -> Result<(), CanonicalError> {
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            // `{"type": {...}}`: the type attribute is itself a schema.
            Some(nested @ (Value::Object(_) | Value::Array(_))) => return self.schema(nested, namespace),
            Some(other) => return Err(invalid(format!("`type` must be a string, found `{other}`"))),
            None => return Err(invalid("an object schema needs a `type`")),
        };
        match kind {
            "record" | "error" | "enum" | "fixed" => self.named(object, kind, namespace),
            "array" => {
                self.out.push_str(r#"{"type":"array","items":"#);
                self.schema(attribute(object, "items", "array")?, namespace)?;
                self.out.push('}');
                Ok(())
            }
            "map" => {
                self.out.push_str(r#"{"type":"map","values":"#);
                self.schema(attribute(object, "values", "map")?, namespace)?;
                self.out.push('}');
                Ok(())
            }
            // A primitive, whatever else the object says (logicalType, properties).
            // Otherwise `{"type": "Name"}`, a named type referred to in object form.
            name => self.reference(name, namespace),
        }
    }

    fn named(&mut self, object: &Map<String, Value>, kind: &str, enclosing: &str) -> Result<(), CanonicalError> {
        let name = match object.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name.as_str(),
            _ => return Err(invalid(format!("a {kind} needs a `name`"))),
        };
        let namespace = match object.get("namespace") {
            _ if name.contains('.') => "",
            Some(Value::String(ns)) => ns.as_str(),
            // Not a string, so not a namespace: Java (and apache-avro) inherit the
            // enclosing one; fastavro takes the null namespace. Java is the reference.
            Some(Value::Null) | None => enclosing,
            Some(other) => return Err(invalid(format!("`namespace` of {name} must be a string, found `{other}`"))),
        };
        let full = full_name(name, namespace);
        if !self.defined.insert(full.clone()) {
            // Defined already (Java writes the name again too).
            return self.string(&full);
        }
        // Names inside this type resolve against its own namespace.
        let inner = match full.rsplit_once('.') {
            Some((ns, _)) if self.inherit => ns.to_owned(),
            _ => String::new(),
        };
        self.out.push_str(r#"{"name":"#);
        self.string(&full)?;
        // Java writes an `error` as a record.
        let kind = if kind == "error" { "record" } else { kind };
        self.out.push_str(r#","type":"#);
        self.string(kind)?;
        match kind {
            "record" => {
                let fields = attribute(object, "fields", name)?.as_array().ok_or_else(|| invalid(format!("`fields` of {name} must be an array")))?;
                self.out.push_str(r#","fields":["#);
                for (i, field) in fields.iter().enumerate() {
                    let field_name = field.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("a field of {name} has no `name`")))?;
                    let field_type = field.get("type").ok_or_else(|| invalid(format!("field {name}.{field_name} has no `type`")))?;
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.out.push_str(r#"{"name":"#);
                    self.string(field_name)?;
                    self.out.push_str(r#","type":"#);
                    self.schema(field_type, &inner)?;
                    self.out.push('}');
                }
                self.out.push(']');
            }
            "enum" => {
                let symbols = attribute(object, "symbols", name)?.as_array().ok_or_else(|| invalid(format!("`symbols` of {name} must be an array")))?;
                self.out.push_str(r#","symbols":["#);
                for (i, symbol) in symbols.iter().enumerate() {
                    let symbol = symbol.as_str().ok_or_else(|| invalid(format!("a symbol of {name} is not a string")))?;
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.string(symbol)?;
                }
                self.out.push(']');
            }
            _ => {
                self.out.push_str(r#","size":"#);
                self.out.push_str(&size(attribute(object, "size", name)?, name)?.to_string());
            }
        }
        self.out.push('}');
        Ok(())
    }

    /// A JSON string literal: UTF-8, escaped only where JSON requires it.
    fn string(&mut self, s: &str) -> Result<(), CanonicalError> {
        let quoted = serde_json::to_string(s).map_err(|e| invalid(e.to_string()))?;
        self.out.push_str(&quoted);
        Ok(())
    }
}

fn attribute<'a>(object: &'a Map<String, Value>, key: &str, owner: &str) -> Result<&'a Value, CanonicalError> {
    object.get(key).ok_or_else(|| invalid(format!("{owner} needs `{key}`")))
}

/// A fixed's size: a non-negative integer, also when written as a quoted string.
fn size(value: &Value, owner: &str) -> Result<u64, CanonicalError> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(format!("`size` of {owner} must be a non-negative integer, found `{value}`")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pcf(schema: Value) -> String {
        parsing_canonical_form(&schema).unwrap_or_else(|e| panic!("{schema}: {e}"))
    }

    #[test]
    fn logical_types_collapse_to_their_primitive() {
        // AVRO-4004: apache-avro writes {"type":"long"} here.
        assert_eq!(pcf(json!({"type": "long", "logicalType": "timestamp-millis"})), r#""long""#);
        assert_eq!(pcf(json!({"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2})), r#""bytes""#);
        assert_eq!(
            pcf(json!({"type": "fixed", "name": "Amount", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 2})),
            r#"{"name":"Amount","type":"fixed","size":8}"#
        );
    }

    #[test]
    fn names_are_qualified_by_the_enclosing_namespace_unless_dotted_or_overridden() {
        let schema = json!({"type": "record", "name": "Outer", "namespace": "a", "fields": [
            {"name": "inherited", "type": {"type": "enum", "name": "E", "symbols": ["X"]}},
            {"name": "overridden", "type": {"type": "fixed", "name": "F", "namespace": "b", "size": "04"}},
            {"name": "dotted", "type": {"type": "record", "name": "c.R", "namespace": "ignored", "fields": [
                {"name": "in_c", "type": {"type": "fixed", "name": "G", "size": 1}}]}},
            {"name": "none", "type": {"type": "record", "name": "N", "namespace": "", "fields": []}},
            {"name": "again", "type": "E"},
            {"name": "by_full_name", "type": "c.G"}]});
        assert_eq!(
            pcf(schema),
            concat!(
                r#"{"name":"a.Outer","type":"record","fields":["#,
                r#"{"name":"inherited","type":{"name":"a.E","type":"enum","symbols":["X"]}},"#,
                r#"{"name":"overridden","type":{"name":"b.F","type":"fixed","size":4}},"#,
                r#"{"name":"dotted","type":{"name":"c.R","type":"record","fields":[{"name":"in_c","type":{"name":"c.G","type":"fixed","size":1}}]}},"#,
                r#"{"name":"none","type":{"name":"N","type":"record","fields":[]}},"#,
                r#"{"name":"again","type":"a.E"},{"name":"by_full_name","type":"c.G"}]}"#
            )
        );
    }

    #[test]
    fn a_null_namespace_attribute_inherits_as_in_java() {
        // Java's SchemaNormalization writes "a.F" here (fastavro writes "F").
        let schema = json!({"type": "record", "name": "R", "namespace": "a", "fields": [
            {"name": "f", "type": {"type": "fixed", "name": "F", "namespace": null, "size": 1}}]});
        assert_eq!(pcf(schema), r#"{"name":"a.R","type":"record","fields":[{"name":"f","type":{"name":"a.F","type":"fixed","size":1}}]}"#);
    }

    #[test]
    fn unknown_names_and_bad_shapes_are_errors() {
        assert_eq!(parsing_canonical_form(&json!("Nope")), Err(CanonicalError::UnknownName("Nope".into())));
        assert!(matches!(parsing_canonical_form(&json!({"type": "record", "name": "R"})), Err(CanonicalError::Invalid(_))));
        assert!(matches!(parsing_canonical_form(&json!({"type": "fixed", "name": "F", "size": -1})), Err(CanonicalError::Invalid(_))));
        assert!(matches!(parsing_canonical_form(&json!(3)), Err(CanonicalError::Invalid(_))));
    }
}
