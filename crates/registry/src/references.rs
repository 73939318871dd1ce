//! Confluent schema references: a schema that names types registered under other subjects
//! (`"references": [{"name": "com.acme.Address", "subject": "address", "version": 1}]`),
//! made into one standalone schema by writing each referenced type's definition where the
//! schema first names it.
//!
//! Herald reads a writer's schema as one Avro schema (its fingerprint, its resolution to
//! the reader's type), so referenced types are inlined, as Avro itself writes a schema
//! without references: the first use holds the definition, later uses the name. As in
//! Confluent's own (Java) deserializer, a reference's `name` is only a label: every named
//! type the referenced schemas define, nested ones included, is known by its full name,
//! and only the definition a name stands for is inlined (never a union or an array that
//! held it).
//!
//! Names resolve as the Avro specification says (a short name in the enclosing
//! namespace). Java's parser also falls back to the null namespace for a short name it
//! does not find there, which no spec-conforming schema can express; Herald does not, so
//! such a schema is refused with the name it cannot resolve.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Avro's primitive type names: never references.
const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// Two referenced schemas define the same named type differently (two versions of one
/// shared type, say): which one the schema means cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two referenced schemas define {0} differently")]
pub struct ConflictingDefinitions(pub String);

/// `schema` with each named type it uses but does not define written out at its first use,
/// from the definitions in `referenced` (the schemas its references point to, and theirs,
/// in any order). A name defined nowhere is left as it is (the parser reports it).
///
/// ```
/// use herald_registry::references::inline;
/// use serde_json::json;
/// let address = json!({"type": "record", "name": "Address", "namespace": "acme", "fields": [{"name": "city", "type": "string"}]});
/// let order = json!({"type": "record", "name": "Order", "namespace": "acme", "fields": [
///     {"name": "from", "type": "Address"}, {"name": "to", "type": "acme.Address"}]});
/// let whole = inline(order, &[address]).unwrap();
/// assert_eq!(whole["fields"][0]["type"]["fields"][0]["name"], "city");
/// assert_eq!(whole["fields"][1]["type"], "acme.Address");
/// ```
pub fn inline(schema: Value, referenced: &[Value]) -> Result<Value, ConflictingDefinitions> {
    let mut named = HashMap::new();
    for definition in referenced {
        index(definition, "", &mut named)?;
    }
    let mut inliner = Inliner { named: &named, defined: HashSet::new() };
    let mut schema = schema;
    inliner.walk(&mut schema, "");
    Ok(schema)
}

/// Adds every named type `schema` defines (found where the enclosing namespace is `ns`)
/// to `named`, by full name, each written to keep its full name wherever it is inlined.
fn index(schema: &Value, ns: &str, named: &mut HashMap<String, Value>) -> Result<(), ConflictingDefinitions> {
    match schema {
        Value::Array(union) => union.iter().try_for_each(|branch| index(branch, ns, named)),
        Value::Object(fields) => {
            match fields.get("type") {
                Some(Value::String(kind)) if matches!(kind.as_str(), "record" | "error" | "enum" | "fixed") => {
                    let (full, inner_ns) = defined_name(fields, ns);
                    let definition = standalone(schema.clone(), &full);
                    match named.get(&full) {
                        Some(known) if *known != definition => return Err(ConflictingDefinitions(full)),
                        Some(_) => {}
                        None => {
                            named.insert(full, definition);
                        }
                    }
                    if let Some(Value::Array(record_fields)) = fields.get("fields") {
                        for field in record_fields {
                            if let Some(t) = field.get("type") {
                                index(t, &inner_ns, named)?;
                            }
                        }
                    }
                    Ok(())
                }
                Some(Value::String(kind)) if kind == "array" => fields.get("items").map_or(Ok(()), |items| index(items, ns, named)),
                Some(Value::String(kind)) if kind == "map" => fields.get("values").map_or(Ok(()), |values| index(values, ns, named)),
                Some(nested) => index(nested, ns, named),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

struct Inliner<'a> {
    named: &'a HashMap<String, Value>,
    defined: HashSet<String>,
}

impl Inliner<'_> {
    /// Walks a schema found where the enclosing namespace is `ns` ("" for none).
    fn walk(&mut self, schema: &mut Value, ns: &str) {
        match schema {
            Value::String(name) => {
                if PRIMITIVES.contains(&name.as_str()) {
                    return;
                }
                let full = full_name(name, None, ns);
                if self.defined.contains(&full) {
                    return;
                }
                if let Some(definition) = self.named.get(&full) {
                    // Walked as a definition: its name is taken first, so a use of it
                    // inside (a recursive type) stays a name.
                    *schema = definition.clone();
                    self.walk(schema, ns);
                }
            }
            Value::Array(union) => union.iter_mut().for_each(|branch| self.walk(branch, ns)),
            Value::Object(fields) => {
                if let Some(name) = self.walk_object(fields, ns) {
                    // A definition of a type already written (a nested type of a
                    // referenced one that the schema used before): its name instead.
                    *schema = Value::String(name);
                }
            }
            _ => {}
        }
    }

    /// Walks a schema object; returns the full name of a named type that was already
    /// defined, which the caller writes instead of this second definition.
    fn walk_object(&mut self, schema: &mut Map<String, Value>, ns: &str) -> Option<String> {
        let kind = schema.get("type").and_then(Value::as_str).map(str::to_owned);
        match kind.as_deref() {
            Some("record" | "error" | "enum" | "fixed") => {
                let (full, inner_ns) = defined_name(schema, ns);
                if !self.defined.insert(full.clone()) {
                    return Some(full);
                }
                if let Some(Value::Array(fields)) = schema.get_mut("fields") {
                    for field in fields.iter_mut() {
                        if let Some(t) = field.get_mut("type") {
                            self.walk(t, &inner_ns);
                        }
                    }
                }
            }
            Some("array") => {
                if let Some(items) = schema.get_mut("items") {
                    self.walk(items, ns);
                }
            }
            Some("map") => {
                if let Some(values) = schema.get_mut("values") {
                    self.walk(values, ns);
                }
            }
            // `{"type": "Address"}`, `{"type": {...}}`, `{"type": [...]}`, `{"type": "long", "logicalType": ...}`.
            _ => {
                if let Some(t) = schema.get_mut("type") {
                    self.walk(t, ns);
                }
            }
        }
        None
    }
}

/// The full name of the named type `definition` (found where the enclosing namespace is
/// `ns`) and the namespace its own fields' short names resolve in.
fn defined_name(definition: &Map<String, Value>, ns: &str) -> (String, String) {
    let name = definition.get("name").and_then(Value::as_str).unwrap_or_default();
    // An explicit `"namespace": null` is the same as none: the enclosing one.
    let full = full_name(name, definition.get("namespace").and_then(Value::as_str), ns);
    let inner_ns = full.rsplit_once('.').map_or("", |(n, _)| n).to_owned();
    (full, inner_ns)
}

/// The full name of `name` (already full when it holds a dot), else in `namespace` when
/// given (empty: the null namespace), else in the enclosing `ns`.
fn full_name(name: &str, namespace: Option<&str>, ns: &str) -> String {
    if name.contains('.') {
        return name.to_owned();
    }
    match namespace.unwrap_or(ns) {
        "" => name.to_owned(),
        space => format!("{space}.{name}"),
    }
}

/// A definition made to keep its full name wherever it is written: the name made full (a
/// dotted name ignores the enclosing namespace), or, for a type in the null namespace, an
/// explicit empty namespace.
fn standalone(mut definition: Value, full: &str) -> Value {
    if let Value::Object(fields) = &mut definition {
        if full.contains('.') {
            fields.insert("name".into(), Value::String(full.to_owned()));
            fields.remove("namespace");
        } else {
            fields.insert("namespace".into(), Value::String(String::new()));
        }
    }
    definition
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_bus::schema::SchemaSet;
    use serde_json::json;

    /// ParcelShipped as herald-testkit writes it: `Address` defined at its first use.
    const WHOLE: &str = <herald_testkit::parcels::ParcelShipped as herald_bus::Event>::SCHEMA;

    fn fingerprint(schema: &str) -> herald_bus::schema::Fingerprint {
        SchemaSet::default().add_str(schema).unwrap_or_else(|e| panic!("{e}: {schema}")).fingerprint
    }

    fn address() -> Value {
        json!({"type": "record", "name": "Address", "namespace": "herald.tests", "fields": [
            {"name": "street", "type": "string"}, {"name": "city", "type": "string"}]})
    }

    /// The same schema split the Confluent way has the fingerprint of the whole one.
    #[test]
    fn a_schema_with_a_referenced_type_has_the_fingerprint_of_the_schema_written_whole() {
        let split = json!({"type": "record", "name": "ParcelShipped", "namespace": "herald.tests", "fields": [
            {"name": "parcel_id", "type": "string"},
            {"name": "from", "type": "herald.tests.Address"},
            {"name": "to", "type": "Address"},
            {"name": "return_to", "type": ["null", "herald.tests.Address"], "default": null},
            {"name": "stops", "type": {"type": "array", "items": "Address"}}]});
        let whole = inline(split, &[address()]).expect("inlined");
        assert_eq!(fingerprint(&whole.to_string()), fingerprint(WHOLE));
    }

    /// References of references (given flat, in any order), types in another namespace, a
    /// union of references, a map of them and a nested type field (`{"type": "Name"}`).
    #[test]
    fn nested_references_and_namespaces_resolve_to_the_schema_written_whole() {
        let money = json!({"type": "fixed", "name": "Cents", "namespace": "fx", "size": 8});
        let currency = json!({"type": "enum", "name": "Currency", "namespace": "fx", "symbols": ["EUR", "USD"]});
        let price = json!({"type": "record", "name": "Price", "namespace": "fx", "fields": [
            {"name": "amount", "type": "Cents"}, {"name": "currency", "type": "Currency"}]});
        let split = json!({"type": "record", "name": "Quote", "namespace": "shop", "fields": [
            {"name": "best", "type": {"type": "fx.Price"}},
            {"name": "others", "type": {"type": "map", "values": "fx.Price"}},
            {"name": "fee", "type": ["null", "fx.Cents"]}]});
        let whole = inline(split, &[price, money, currency]).expect("inlined");
        let written_whole = r#"{"type": "record", "name": "Quote", "namespace": "shop", "fields": [
            {"name": "best", "type": {"type": "record", "name": "Price", "namespace": "fx", "fields": [
                {"name": "amount", "type": {"type": "fixed", "name": "Cents", "size": 8}},
                {"name": "currency", "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD"]}}]}},
            {"name": "others", "type": {"type": "map", "values": "fx.Price"}},
            {"name": "fee", "type": ["null", "fx.Cents"]}]}"#;
        assert_eq!(fingerprint(&whole.to_string()), fingerprint(written_whole), "{whole}");
    }

    /// A type defined inside a referenced one, used before it: defined at its own first
    /// use, then named inside the outer type's definition.
    #[test]
    fn a_nested_type_of_a_referenced_schema_used_first_is_defined_there() {
        let address = json!({"type": "record", "name": "Address", "namespace": "acme", "fields": [
            {"name": "country", "type": {"type": "enum", "name": "Country", "symbols": ["BE", "FR"]}}]});
        let split = json!({"type": "record", "name": "Order", "namespace": "acme", "fields": [
            {"name": "origin", "type": "Country"}, {"name": "to", "type": "Address"}]});
        let whole = inline(split, &[address]).expect("inlined");
        let written_whole = r#"{"type": "record", "name": "Order", "namespace": "acme", "fields": [
            {"name": "origin", "type": {"type": "enum", "name": "Country", "symbols": ["BE", "FR"]}},
            {"name": "to", "type": {"type": "record", "name": "Address", "fields": [{"name": "country", "type": "Country"}]}}]}"#;
        assert_eq!(fingerprint(&whole.to_string()), fingerprint(written_whole), "{whole}");
    }

    /// A referenced schema that is a union (or an array) holding the definition: only the
    /// definition is inlined, never the union around it.
    #[test]
    fn only_the_definition_is_inlined_not_the_union_that_held_it() {
        let referenced = json!(["null", address()]);
        let split = json!({"type": "record", "name": "Parcel", "namespace": "herald.tests", "fields": [
            {"name": "to", "type": ["null", "Address"]}, {"name": "stops", "type": {"type": "array", "items": "Address"}}]});
        let whole = inline(split, &[referenced]).expect("inlined");
        assert_eq!(whole["fields"][0]["type"][1]["type"], "record", "{whole}");
        assert_eq!(whole["fields"][1]["type"]["items"], "Address", "a later use stays a name: {whole}");
        fingerprint(&whole.to_string());
    }

    #[test]
    fn a_recursive_referenced_type_is_inlined_once() {
        let node = json!({"type": "record", "name": "Node", "namespace": "t", "fields": [
            {"name": "next", "type": ["null", "Node"]}]});
        let list = json!({"type": "record", "name": "List", "namespace": "t", "fields": [{"name": "nodes", "type": {"type": "array", "items": "t.Node"}}]});
        let whole = inline(list, &[node]).expect("inlined");
        assert_eq!(whole["fields"][0]["type"]["items"]["fields"][0]["type"][1], "Node");
        fingerprint(&whole.to_string());
    }

    /// A referenced "schema" that only names the type (what a registry may hold for a
    /// reference of a reference) defines nothing: no loop, the name stays for the parser.
    #[test]
    fn a_reference_that_only_names_a_type_defines_nothing() {
        let main = json!({"type": "record", "name": "R", "namespace": "a", "fields": [{"name": "x", "type": "a.X"}]});
        let whole = inline(main, &[json!({"type": "a.X"}), json!("a.X")]).expect("no conflict");
        assert_eq!(whole["fields"][0]["type"], "a.X");
    }

    #[test]
    fn two_different_definitions_of_one_name_are_refused() {
        let v2 = json!({"type": "record", "name": "Address", "namespace": "herald.tests", "fields": [{"name": "city", "type": "string"}]});
        let main = json!({"type": "record", "name": "P", "namespace": "herald.tests", "fields": [{"name": "to", "type": "Address"}]});
        assert_eq!(inline(main.clone(), &[address(), v2]), Err(ConflictingDefinitions("herald.tests.Address".into())));
        assert!(inline(main, &[address(), address()]).is_ok(), "the same definition twice is one");
    }

    #[test]
    fn a_name_defined_nowhere_is_left_for_the_parser_to_report() {
        let whole = inline(json!({"type": "record", "name": "R", "fields": [{"name": "a", "type": "Missing"}]}), &[]).expect("inlined");
        assert_eq!(whole["fields"][0]["type"], "Missing");
        assert!(SchemaSet::default().add_str(&whole.to_string()).is_err());
    }

    /// A type in the null namespace keeps its name wherever it is inlined; named by a short
    /// name inside a namespace (Java's fallback) it is not found, per the spec.
    #[test]
    fn null_namespace_types_resolve_per_the_spec() {
        let cents = json!({"type": "fixed", "name": "Cents", "size": 8});
        let top = json!({"type": "record", "name": "Fee", "fields": [{"name": "amount", "type": "Cents"}, {"name": "again", "type": "Cents"}]});
        let whole = inline(top, std::slice::from_ref(&cents)).expect("inlined");
        let canonical = herald_bus::schema::canonical::parsing_canonical_form(&whole).expect("canonical form");
        assert!(canonical.contains(r#"{"name":"Cents","type":"fixed","size":8}"#), "{canonical}");
        fingerprint(&whole.to_string());
        let namespaced = json!({"type": "record", "name": "Fee", "namespace": "shop", "fields": [{"name": "amount", "type": "Cents"}]});
        let whole = inline(namespaced, &[cents]).expect("inlined");
        assert_eq!(whole["fields"][0]["type"], "Cents", "shop.Cents is not defined: left for the parser");
        assert!(SchemaSet::default().add_str(&whole.to_string()).is_err());
    }
}
