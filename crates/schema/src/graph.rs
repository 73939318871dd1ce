//! The resolution view of a schema: just what the Avro spec's resolution rules look at.
//!
//! Built from the schema's JSON (not from `apache_avro::Schema`, which folds some named
//! types into logical types and loses their names, e.g. a `fixed` with
//! `logicalType: duration`). Logical types are ignored: resolution uses the underlying
//! type, as the spec and Java do. Every named type becomes a [`Node::Named`] reference into
//! [`Graph::named`], so recursive schemas are finite graphs.

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
    Fixed { size: u64 },
}

/// A record field.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub name: String,
    pub aliases: Vec<String>,
    /// True when the field has a `default` (a JSON `null` default counts).
    pub has_default: bool,
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
        match missing.first() {
            Some(name) => Err(format!("unknown type `{name}`")),
            None => Ok(graph),
        }
    }

    /// The definition behind a named reference.
    pub fn get(&self, full_name: &str) -> Option<&Named> {
        self.named.get(full_name)
    }

    fn each_reference(&self, f: &mut dyn FnMut(&str)) {
        fn walk(node: &Node, f: &mut dyn FnMut(&str)) {
            match node {
                Node::Array(n) | Node::Map(n) => walk(n, f),
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
            name => Ok(self.by_name(name, namespace)),
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
        let placeholder = Named { full_name: full_name.clone(), aliases, kind: Kind::Fixed { size: 0 } };
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
                        has_default: field.contains_key("default"),
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
