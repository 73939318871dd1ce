//! The resolution view of a schema: just what the Avro spec's resolution rules look at.
//!
//! Built from the schema's JSON (not from `apache_avro::Schema`, which folds some named
//! types into logical types and loses their names, e.g. a `fixed` with
//! `logicalType: duration`). Resolution uses the underlying type of a logical type, as the
//! spec and Java do, but a valid logical type is kept ([`Node::Logical`], and on a `fixed`)
//! so that a change of it on the same underlying type can be refused. Every named type
//! becomes a [`Node::Named`] reference into [`Graph::named`], so recursive schemas are
//! finite graphs.
//!
//! Building a graph also checks every field default against its type (a union's default
//! against its first branch, as the spec says), which `apache_avro` does not fully do.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// One node of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    /// A record, enum or fixed, by full name.
    Named(String),
    /// A primitive (never a union or named type) with a valid logical type.
    Logical(Logical, Box<Node>),
}

impl Node {
    /// The node without its logical type: what resolution looks at.
    pub fn physical(&self) -> &Node {
        match self {
            Node::Logical(_, node) => node,
            node => node,
        }
    }
}

/// A valid logical type (an invalid one is ignored, as the spec says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Logical {
    /// `decimal` on `bytes` or `fixed`.
    Decimal { precision: u64, scale: u64 },
    /// Any other logical type, by its name (`timestamp-millis`, `date`, `uuid`, ...).
    Other(String),
}

impl fmt::Display for Logical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Logical::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            Logical::Other(name) => f.write_str(name),
        }
    }
}

/// A record, enum or fixed definition.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    /// Full name (`namespace.Name`, or `Name` in the null namespace).
    pub full_name: String,
    /// Aliases, as full names.
    pub aliases: Vec<String>,
    pub kind: Kind,
}

impl Named {
    /// The name without its namespace.
    pub fn short_name(&self) -> &str {
        short(&self.full_name)
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Record { .. } => "record",
            Kind::Enum { .. } => "enum",
            Kind::Fixed { .. } => "fixed",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Record { fields: Vec<Field> },
    Enum { symbols: Vec<String>, default: Option<String> },
    Fixed { size: u64, logical: Option<Logical> },
}

/// A record field.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub name: String,
    pub aliases: Vec<String>,
    /// The field's `default`, as written (a JSON `null` default is `Some`).
    pub default: Option<Value>,
    pub ty: Node,
}

/// A schema: its root node and every named type it defines.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    pub root: Node,
    pub named: HashMap<String, Named>,
}

impl Graph {
    /// Builds the graph of a schema's JSON. The schema is assumed to have passed
    /// `apache_avro`'s validation already; anything unexpected is still an error, not a
    /// panic.
    pub fn from_json(json: &Value) -> Result<Graph, String> {
        let mut graph = Graph { root: Node::Null, named: HashMap::new() };
        graph.root = graph.node(json, "")?;
        // References may only name types defined somewhere in the schema.
        let mut missing = Vec::new();
        graph.each_reference(&mut |name| missing.push(name.to_owned()));
        missing.retain(|n| !graph.named.contains_key(n));
        if let Some(name) = missing.first() {
            return Err(format!("unknown type `{name}`"));
        }
        graph.check_defaults()?;
        Ok(graph)
    }

    /// Checks every field default against the field's type; lists every bad one.
    fn check_defaults(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for named in self.named.values() {
            let Kind::Record { fields } = &named.kind else { continue };
            for field in fields {
                let Some(value) = &field.default else { continue };
                if let Err(why) = self.default_fits(&field.ty, value) {
                    errors.push(format!("field `{}.{}`: invalid default {}: {why}", named.full_name, field.name, shown(value)));
                }
            }
        }
        errors.sort();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Whether `value` is a valid default for `node`, per the spec's JSON encoding of
    /// defaults; the error says why not.
    fn default_fits(&self, node: &Node, value: &Value) -> Result<(), String> {
        let node = node.physical();
        let expected = || format!("expected {}, got {}", self.describe(node), shown(value));
        let fits = match node {
            Node::Null => value.is_null(),
            Node::Boolean => value.is_boolean(),
            Node::Int => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            Node::Long => value.as_i64().is_some(),
            Node::Float | Node::Double => {
                value.is_number() || matches!(value.as_str(), Some("NaN" | "Infinity" | "-Infinity"))
            }
            Node::Bytes | Node::String => value.is_string(),
            Node::Array(items) => {
                let list = value.as_array().ok_or_else(expected)?;
                for (i, item) in list.iter().enumerate() {
                    self.default_fits(items, item).map_err(|e| format!("[{i}]: {e}"))?;
                }
                true
            }
            Node::Map(values) => {
                let map = value.as_object().ok_or_else(expected)?;
                for (key, item) in map {
                    self.default_fits(values, item).map_err(|e| format!("{{{key}}}: {e}"))?;
                }
                true
            }
            Node::Union(branches) => {
                let first = branches.first().ok_or("an empty union has no valid default")?;
                return self.default_fits(first, value).map_err(|e| {
                    format!("a union's default must match its first branch, {}: {e}", self.describe(first))
                });
            }
            Node::Named(name) => return self.named_default_fits(name, value),
            Node::Logical(..) => true, // `physical` stripped it
        };
        if fits { Ok(()) } else { Err(expected()) }
    }

    fn named_default_fits(&self, name: &str, value: &Value) -> Result<(), String> {
        let Some(named) = self.get(name) else { return Err(format!("unknown type `{name}`")) };
        match &named.kind {
            Kind::Enum { symbols, .. } => match value.as_str() {
                Some(s) if symbols.iter().any(|symbol| symbol == s) => Ok(()),
                _ => Err(format!("expected a symbol of enum {name}, got {}", shown(value))),
            },
            Kind::Fixed { size, .. } => match value.as_str() {
                Some(s) if u64::try_from(s.chars().count()).is_ok_and(|n| n == *size) => Ok(()),
                _ => Err(format!("expected fixed {name} of {size} bytes, got {}", shown(value))),
            },
            Kind::Record { fields } => {
                let Some(object) = value.as_object() else {
                    return Err(format!("expected record {name}, got {}", shown(value)));
                };
                for field in fields {
                    match object.get(&field.name) {
                        Some(item) => {
                            self.default_fits(&field.ty, item).map_err(|e| format!("field `{}`: {e}", field.name))?;
                        }
                        None if field.default.is_some() => {}
                        None => return Err(format!("field `{}`: missing, and it has no default", field.name)),
                    }
                }
                Ok(())
            }
        }
    }

    /// The definition behind a named reference.
    pub fn get(&self, full_name: &str) -> Option<&Named> {
        self.named.get(full_name)
    }

    fn each_reference(&self, f: &mut dyn FnMut(&str)) {
        fn walk(node: &Node, f: &mut dyn FnMut(&str)) {
            match node {
                Node::Array(n) | Node::Map(n) | Node::Logical(_, n) => walk(n, f),
                Node::Union(branches) => branches.iter().for_each(|b| walk(b, f)),
                Node::Named(name) => f(name),
                _ => {}
            }
        }
        walk(&self.root, f);
        for named in self.named.values() {
            if let Kind::Record { fields } = &named.kind {
                fields.iter().for_each(|field| walk(&field.ty, f));
            }
        }
    }

    fn node(&mut self, json: &Value, namespace: &str) -> Result<Node, String> {
        match json {
            Value::String(name) => Ok(self.by_name(name, namespace)),
            Value::Array(branches) => {
                branches.iter().map(|b| self.node(b, namespace)).collect::<Result<_, _>>().map(Node::Union)
            }
            Value::Object(object) => self.complex(object, namespace),
            other => Err(format!("a schema must be a string, an array or an object, not {other}")),
        }
    }

    fn by_name(&self, name: &str, namespace: &str) -> Node {
        if let Some(primitive) = primitive(name) {
            return primitive;
        }
        if name.contains('.') || namespace.is_empty() {
            return Node::Named(name.to_owned());
        }
        // A bare name is relative to the enclosing namespace; fall back to the null one.
        let qualified = format!("{namespace}.{name}");
        if self.named.contains_key(&qualified) || !self.named.contains_key(name) {
            Node::Named(qualified)
        } else {
            Node::Named(name.to_owned())
        }
    }

    fn complex(&mut self, object: &Map<String, Value>, namespace: &str) -> Result<Node, String> {
        let ty = object.get("type").ok_or("a schema object needs a `type`")?;
        let ty = match ty {
            Value::String(ty) => ty.as_str(),
            // `{"type": {...}}` or `{"type": [...]}`: the nested schema is the type.
            nested => return self.node(nested, namespace),
        };
        match ty {
            "array" => {
                let items = object.get("items").ok_or("an array needs `items`")?;
                Ok(Node::Array(Box::new(self.node(items, namespace)?)))
            }
            "map" => {
                let values = object.get("values").ok_or("a map needs `values`")?;
                Ok(Node::Map(Box::new(self.node(values, namespace)?)))
            }
            "record" | "error" | "enum" | "fixed" => self.define(ty, object, namespace),
            // A primitive with attributes (often a logical type), or a reference.
            name => {
                let node = self.by_name(name, namespace);
                Ok(match logical(object, name) {
                    Some(logical) if primitive(name).is_some() => Node::Logical(logical, Box::new(node)),
                    _ => node,
                })
            }
        }
    }

    fn define(&mut self, ty: &str, object: &Map<String, Value>, enclosing: &str) -> Result<Node, String> {
        let name = object.get("name").and_then(Value::as_str).ok_or_else(|| format!("a {ty} needs a `name`"))?;
        let (full_name, namespace) = match name.rsplit_once('.') {
            Some((ns, _)) => (name.to_owned(), ns.to_owned()),
            None => {
                let ns = object.get("namespace").and_then(Value::as_str).unwrap_or(enclosing).to_owned();
                (qualify(name, &ns), ns)
            }
        };
        let aliases = strings(object.get("aliases")).into_iter().map(|a| qualify(&a, &namespace)).collect();
        let placeholder = Named { full_name: full_name.clone(), aliases, kind: Kind::Fixed { size: 0, logical: None } };
        if self.named.insert(full_name.clone(), placeholder).is_some() {
            return Err(format!("the name `{full_name}` is defined twice"));
        }
        let kind = match ty {
            "enum" => Kind::Enum {
                symbols: strings(object.get("symbols")),
                default: object.get("default").and_then(Value::as_str).map(str::to_owned),
            },
            "fixed" => Kind::Fixed {
                size: object.get("size").and_then(Value::as_u64).ok_or("a fixed needs a `size`")?,
                logical: logical(object, "fixed"),
            },
            _ => {
                let list = object.get("fields").and_then(Value::as_array).ok_or("a record needs `fields`")?;
                let mut fields = Vec::with_capacity(list.len());
                for field in list {
                    let field = field.as_object().ok_or("a record field must be an object")?;
                    let name = field.get("name").and_then(Value::as_str).ok_or("a record field needs a `name`")?;
                    let ty = field.get("type").ok_or_else(|| format!("field `{name}` needs a `type`"))?;
                    fields.push(Field {
                        name: name.to_owned(),
                        aliases: strings(field.get("aliases")),
                        default: field.get("default").cloned(),
                        ty: self.node(ty, &namespace)?,
                    });
                }
                Kind::Record { fields }
            }
        };
        if let Some(named) = self.named.get_mut(&full_name) {
            named.kind = kind;
        }
        Ok(Node::Named(full_name))
    }

    /// A short description of a node for messages: `int`, `array<string>`, `record a.B`.
    pub fn describe(&self, node: &Node) -> String {
        Describe(self, node).to_string()
    }
}

struct Describe<'a>(&'a Graph, &'a Node);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Describe(graph, node) = *self;
        match node {
            Node::Null => f.write_str("null"),
            Node::Boolean => f.write_str("boolean"),
            Node::Int => f.write_str("int"),
            Node::Long => f.write_str("long"),
            Node::Float => f.write_str("float"),
            Node::Double => f.write_str("double"),
            Node::Bytes => f.write_str("bytes"),
            Node::String => f.write_str("string"),
            Node::Array(items) => write!(f, "array<{}>", Describe(graph, items)),
            Node::Map(values) => write!(f, "map<{}>", Describe(graph, values)),
            Node::Union(branches) => {
                f.write_str("[")?;
                for (i, b) in branches.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Describe(graph, b))?;
                }
                f.write_str("]")
            }
            Node::Named(name) => match graph.get(name) {
                Some(named) => write!(f, "{} {name}", named.kind_name()),
                None => write!(f, "{name}"),
            },
            Node::Logical(logical, node) => write!(f, "{} ({logical})", Describe(graph, node)),
        }
    }
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::String,
        _ => return None,
    })
}

/// The valid logical type of a schema object whose type is `base` (a primitive's name or
/// `fixed`); `None` when it has none or an invalid one (which the spec says to ignore).
fn logical(object: &Map<String, Value>, base: &str) -> Option<Logical> {
    let name = object.get("logicalType")?.as_str()?;
    let valid = match (name, base) {
        ("decimal", "bytes" | "fixed") => {
            let precision = object.get("precision")?.as_u64().filter(|p| *p > 0)?;
            let scale = match object.get("scale") {
                Some(scale) => scale.as_u64()?,
                None => 0,
            };
            return (scale <= precision).then_some(Logical::Decimal { precision, scale });
        }
        ("big-decimal", "bytes")
        | ("uuid", "string" | "fixed")
        | ("duration", "fixed")
        | ("date" | "time-millis", "int")
        | (
            "time-micros" | "timestamp-millis" | "timestamp-micros" | "timestamp-nanos" | "local-timestamp-millis"
            | "local-timestamp-micros" | "local-timestamp-nanos",
            "long",
        ) => true,
        _ => false,
    };
    valid.then(|| Logical::Other(name.to_owned()))
}

/// A default as JSON for messages, shortened when long.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

fn qualify(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() { name.to_owned() } else { format!("{namespace}.{name}") }
}

/// The part of a full name after the last dot.
pub(crate) fn short(full_name: &str) -> &str {
    full_name.rsplit_once('.').map_or(full_name, |(_, name)| name)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(json: &str) -> Graph {
        let value: Value = serde_json::from_str(json).expect("json");
        Graph::from_json(&value).expect("graph")
    }

    #[test]
    fn names_inherit_the_enclosing_namespace() {
        let g = graph(
            r#"{"type":"record","name":"A","namespace":"x.y","fields":[
                {"name":"b","type":{"type":"fixed","name":"B","size":2}},
                {"name":"c","type":{"type":"enum","name":"z.C","symbols":["S"],"aliases":["D"]}},
                {"name":"again","type":"B"}]}"#,
        );
        assert!(g.get("x.y.B").is_some());
        let c = g.get("z.C").expect("C");
        assert_eq!(c.aliases, vec!["z.D".to_owned()]);
        let Some(Kind::Record { fields }) = g.get("x.y.A").map(|n| &n.kind) else { panic!("record") };
        assert_eq!(fields[2].ty, Node::Named("x.y.B".into()));
    }

    #[test]
    fn recursive_records_are_finite() {
        let g = graph(r#"{"type":"record","name":"List","fields":[{"name":"next","type":["null","List"]}]}"#);
        assert_eq!(g.describe(&g.root), "record List");
    }

    #[test]
    fn unknown_references_are_errors() {
        let value: Value = serde_json::from_str(r#"{"type":"array","items":"Nope"}"#).expect("json");
        assert!(Graph::from_json(&value).is_err());
    }
}
