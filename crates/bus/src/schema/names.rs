//! The named types a schema defines, by full name, to follow `Schema::Ref`.
//!
//! A named type (record, enum, fixed) is defined once and referenced by name after that;
//! apache-avro parses each later use as `Schema::Ref`. A walk that compares two schemas
//! must follow those references, or it stops wherever one side defines a type and the
//! other refers to it (fields reordered between versions).
//!
//! apache-avro's own `ResolvedSchema` does not register a decimal on a named `fixed`, so
//! a schema that refers to one by name fails there; this map holds it.

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};

/// Named types of one schema, by full name.
pub(crate) type Names<'s> = HashMap<Name, &'s Schema>;

/// Deepest nesting followed while collecting.
const MAX_DEPTH: usize = 256;

/// The named types `schema` defines (the first definition of a name wins).
pub(crate) fn names(schema: &Schema) -> Names<'_> {
    let mut out = Names::new();
    collect(schema, &mut out, 0);
    out
}

fn collect<'s>(schema: &'s Schema, out: &mut Names<'s>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match schema {
        Schema::Record(record) => {
            out.entry(record.name.clone()).or_insert(schema);
            for field in &record.fields {
                collect(&field.schema, out, depth + 1);
            }
        }
        Schema::Enum(e) => {
            out.entry(e.name.clone()).or_insert(schema);
        }
        Schema::Fixed(f) => {
            out.entry(f.name.clone()).or_insert(schema);
        }
        Schema::Decimal(d) => {
            if let Schema::Fixed(f) = &*d.inner {
                out.entry(f.name.clone()).or_insert(schema);
            }
        }
        Schema::Array(a) => collect(&a.items, out, depth + 1),
        Schema::Map(m) => collect(&m.types, out, depth + 1),
        Schema::Union(u) => {
            for branch in u.variants() {
                collect(branch, out, depth + 1);
            }
        }
        _ => {}
    }
}

/// `schema`, or the definition it refers to by name.
pub(crate) fn deref<'a>(names: &Names<'a>, schema: &'a Schema) -> &'a Schema {
    match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        other => other,
    }
}

/// The named types of one schema, collected on the first reference followed: most
/// schemas have none, and a walk per datum should not pay for the map.
pub(crate) struct LazyNames<'s> {
    root: &'s Schema,
    names: std::cell::OnceCell<Names<'s>>,
}

impl<'s> LazyNames<'s> {
    pub(crate) fn new(root: &'s Schema) -> Self {
        Self { root, names: std::cell::OnceCell::new() }
    }

    /// `schema`, or the definition it refers to by name.
    pub(crate) fn deref(&self, schema: &'s Schema) -> &'s Schema {
        match schema {
            Schema::Ref { .. } => deref(self.names.get_or_init(|| names(self.root)), schema),
            other => other,
        }
    }
}

/// Whether `branch` is the named type `name`: by full name (`full`) or unqualified name,
/// or by one of its aliases. A reader union's branch for a written named value is the
/// first that is by full name, else the first by unqualified name (as Java chooses).
pub(crate) fn named(branch: &Schema, name: &Name, full: bool) -> bool {
    let Some(own) = branch.name() else { return false };
    let matches = |candidate: &Name| if full { candidate.fullname(None) == name.fullname(None) } else { candidate.name == name.name };
    matches(own) || branch.aliases().is_some_and(|aliases| aliases.iter().any(|a| if full { a.fullname(own.namespace.clone()) == name.fullname(None) } else { a.name() == name.name }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_lead_to_their_definitions_decimals_on_fixed_included() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"Trip","namespace":"t","fields":[
                {"name":"start","type":{"type":"record","name":"Stamp","fields":[{"name":"at","type":"long"}]}},
                {"name":"end","type":"Stamp"},
                {"name":"fare","type":{"type":"fixed","name":"Money","size":8,"logicalType":"decimal","precision":18,"scale":2}},
                {"name":"tip","type":["null","Money"]}]}"#,
        )
        .expect("schema");
        let names = names(&schema);
        let Schema::Record(trip) = &schema else { panic!("a record") };
        assert!(matches!(deref(&names, &trip.fields[1].schema), Schema::Record(r) if r.name.fullname(None) == "t.Stamp"));
        let Schema::Union(tip) = &trip.fields[3].schema else { panic!("a union") };
        assert!(matches!(deref(&names, &tip.variants()[1]), Schema::Decimal(d) if d.scale == 2), "{:?}", tip.variants()[1]);
    }
}
