//! Confluent schema references: a schema that names types registered under other subjects
//! (`"references": [{"name": "com.acme.Address", "subject": "address", "version": 1}]`),
//! made into one standalone schema by writing each referenced type's definition where the
//! schema first names it.
//!
//! Herald reads a writer's schema as one Avro schema (its fingerprint, its resolution to
//! the reader's type), so a referenced type is inlined, as Avro itself would have written
//! the schema without references: the first use holds the definition, later uses the name.
//! The result has the parsing canonical form (and fingerprint) of the same schema written
//! in one piece.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Avro's primitive type names: never references.
const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// `schema` with every name in `named` (full name → the referenced schema's JSON) that it
/// uses but does not define replaced by that definition at its first use. Referenced
/// schemas may use each other's types; a name defined nowhere is left as it is (the
/// parser reports it).
///
/// ```
/// use herald_registry::references::inline;
/// use serde_json::json;
/// let address = json!({"type": "record", "name": "Address", "namespace": "acme", "fields": [{"name": "city", "type": "string"}]});
/// let order = json!({"type": "record", "name": "Order", "namespace": "acme", "fields": [
///     {"name": "from", "type": "Address"}, {"name": "to", "type": "acme.Address"}]});
/// let named = [("acme.Address".to_owned(), address)].into_iter().collect();
/// let whole = inline(order, &named);
/// assert_eq!(whole["fields"][0]["type"]["fields"][0]["name"], "city");
/// assert_eq!(whole["fields"][1]["type"], "acme.Address");
/// ```
pub fn inline(schema: Value, named: &HashMap<String, Value>) -> Value {
    let mut inliner = Inliner { named, defined: HashSet::new() };
    let mut schema = schema;
    inliner.walk(&mut schema, "");
    schema
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
                let mut full = full_name(name, None, ns);
                if self.defined.contains(&full) {
                    return;
                }
                // Java's parser (Confluent's registry's) falls back to the null namespace
                // for a short name not found in the enclosing one.
                if !self.named.contains_key(&full) && !name.contains('.') && !self.defined.contains(name.as_str()) {
                    full = name.clone();
                }
                if let Some(definition) = self.named.get(&full) {
                    let mut definition = standalone(definition.clone(), &full, ns);
                    self.walk(&mut definition, ns);
                    *schema = definition;
                }
            }
            Value::Array(union) => union.iter_mut().for_each(|branch| self.walk(branch, ns)),
            Value::Object(fields) => self.walk_object(fields, ns),
            _ => {}
        }
    }

    fn walk_object(&mut self, schema: &mut Map<String, Value>, ns: &str) {
        let kind = schema.get("type").and_then(Value::as_str).map(str::to_owned);
        match kind.as_deref() {
            Some("record" | "error" | "enum" | "fixed") => {
                let name = schema.get("name").and_then(Value::as_str).unwrap_or_default();
                let full = full_name(name, schema.get("namespace").and_then(Value::as_str), ns);
                let inner_ns = full.rsplit_once('.').map_or("", |(n, _)| n).to_owned();
                self.defined.insert(full);
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
    }
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

/// A referenced definition made to keep its full name wherever it is written: the name
/// made full (a dotted name ignores the enclosing namespace), or, for a type in the null
/// namespace written inside a namespace, an explicit empty namespace.
fn standalone(mut definition: Value, full: &str, ns: &str) -> Value {
    if let Value::Object(fields) = &mut definition {
        if full.contains('.') {
            fields.insert("name".into(), Value::String(full.to_owned()));
            fields.remove("namespace");
        } else if !ns.is_empty() {
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

    fn named(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect()
    }

    /// ParcelShipped as herald-testkit writes it: `Address` defined at its first use.
    const WHOLE: &str = <herald_testkit::parcels::ParcelShipped as herald_bus::Event>::SCHEMA;

    /// The same schema split the Confluent way has the fingerprint of the whole one.
    #[test]
    fn a_schema_with_a_referenced_type_has_the_fingerprint_of_the_schema_written_whole() {
        let address = json!({"type": "record", "name": "Address", "namespace": "herald.tests", "fields": [
            {"name": "street", "type": "string"}, {"name": "city", "type": "string"}]});
        let split = json!({"type": "record", "name": "ParcelShipped", "namespace": "herald.tests", "fields": [
            {"name": "parcel_id", "type": "string"},
            {"name": "from", "type": "herald.tests.Address"},
            {"name": "to", "type": "Address"},
            {"name": "return_to", "type": ["null", "herald.tests.Address"], "default": null},
            {"name": "stops", "type": {"type": "array", "items": "Address"}}]});
        let whole = inline(split, &named(&[("herald.tests.Address", address)]));
        let mut set = SchemaSet::default();
        let ours = set.add_str(&whole.to_string()).expect("parses").fingerprint;
        let want = SchemaSet::default().add_str(WHOLE).expect("parses").fingerprint;
        assert_eq!(ours, want);
    }

    /// References of references, a type in another namespace, a union of references, a
    /// map of them and a nested type field (`{"type": "Name"}`).
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
        let refs = named(&[("fx.Cents", money), ("fx.Currency", currency), ("fx.Price", price)]);
        let whole = inline(split, &refs);
        let written_whole = r#"{"type": "record", "name": "Quote", "namespace": "shop", "fields": [
            {"name": "best", "type": {"type": "record", "name": "Price", "namespace": "fx", "fields": [
                {"name": "amount", "type": {"type": "fixed", "name": "Cents", "size": 8}},
                {"name": "currency", "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD"]}}]}},
            {"name": "others", "type": {"type": "map", "values": "fx.Price"}},
            {"name": "fee", "type": ["null", "fx.Cents"]}]}"#;
        let ours = SchemaSet::default().add_str(&whole.to_string()).unwrap_or_else(|e| panic!("{e}: {whole}")).fingerprint;
        let want = SchemaSet::default().add_str(written_whole).expect("parses").fingerprint;
        assert_eq!(ours, want, "{whole}");
    }

    /// A type in the null namespace named by its short name inside a namespace (which
    /// Java's parser, and so Confluent's registry, accepts) keeps its null namespace.
    #[test]
    fn a_null_namespace_type_used_inside_a_namespace_keeps_its_full_name() {
        let cents = json!({"type": "fixed", "name": "Cents", "size": 8});
        let split = json!({"type": "record", "name": "Fee", "namespace": "shop", "fields": [{"name": "amount", "type": "Cents"}]});
        let whole = inline(split, &named(&[("Cents", cents)]));
        assert_eq!(whole["fields"][0]["type"]["namespace"], "", "{whole}");
        let parsed = SchemaSet::default().add_str(&whole.to_string()).unwrap_or_else(|e| panic!("{e}: {whole}"));
        let written_whole = r#"{"type": "record", "name": "Fee", "namespace": "shop", "fields": [{"name": "amount", "type": {"type": "fixed", "name": "Cents", "namespace": "", "size": 8}}]}"#;
        assert_eq!(parsed.fingerprint, SchemaSet::default().add_str(written_whole).expect("parses").fingerprint);
        let canonical = herald_bus::schema::canonical::parsing_canonical_form(&whole).expect("canonical form");
        assert!(canonical.contains(r#"{"name":"Cents","type":"fixed","size":8}"#), "{canonical}");
    }

    #[test]
    fn a_recursive_referenced_type_is_inlined_once() {
        let node = json!({"type": "record", "name": "Node", "namespace": "t", "fields": [
            {"name": "next", "type": ["null", "Node"]}]});
        let list = json!({"type": "record", "name": "List", "namespace": "t", "fields": [{"name": "nodes", "type": {"type": "array", "items": "t.Node"}}]});
        let whole = inline(list, &named(&[("t.Node", node)]));
        assert_eq!(whole["fields"][0]["type"]["items"]["fields"][0]["type"][1], "Node");
        SchemaSet::default().add_str(&whole.to_string()).expect("parses");
    }

    #[test]
    fn a_name_defined_nowhere_is_left_for_the_parser_to_report() {
        let whole = inline(json!({"type": "record", "name": "R", "fields": [{"name": "a", "type": "Missing"}]}), &HashMap::new());
        assert_eq!(whole["fields"][0]["type"], "Missing");
        assert!(SchemaSet::default().add_str(&whole.to_string()).is_err());
    }
}
