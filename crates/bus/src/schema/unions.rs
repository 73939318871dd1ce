//! Union branches chosen by name when a datum is resolved from its writer's schema to the
//! reader's.
//!
//! apache-avro 0.21 resolves a value into a reader union by trying the branches in order
//! and taking the first the value resolves to; for a record, any record branch whose
//! fields are all present or defaulted will do. So with `[Card{last4}, Iban{last4, bic}]`
//! an `Iban` written by an older version was read as a `Card`, without an error. The Avro
//! spec, and Java's resolver, pick the reader branch of the same name first. [`repair`]
//! walks the writer's value beside apache-avro's result and, wherever a named writer value
//! landed in a reader branch of another name while a branch of its own name exists (full
//! name first, then the unqualified name, as Java does; or a branch whose aliases name
//! it), resolves it into that branch instead.

use apache_avro::schema::Schema;
use apache_avro::types::Value;

use super::names::{deref, named, names, Names};

/// Whether some union of `schema` has two or more named branches: only then can a branch
/// be chosen by shape instead of by name.
pub(crate) fn has_named_unions(schema: &Schema) -> bool {
    fn walk(schema: &Schema, depth: usize) -> bool {
        if depth > 64 {
            return false;
        }
        match schema {
            Schema::Union(u) => u.variants().iter().filter(|b| b.name().is_some() || matches!(b, Schema::Ref { .. })).count() >= 2 || u.variants().iter().any(|b| walk(b, depth + 1)),
            Schema::Record(r) => r.fields.iter().any(|f| walk(&f.schema, depth + 1)),
            Schema::Array(a) => walk(&a.items, depth + 1),
            Schema::Map(m) => walk(&m.types, depth + 1),
            _ => false,
        }
    }
    walk(schema, 0)
}

/// Corrects `resolved` (apache-avro's resolution of `written`, a value of `writer`, to
/// `reader`) so that every union branch is chosen by name (see the [module docs](self)).
pub(crate) fn repair(written: &Value, writer: &Schema, resolved: &mut Value, reader: &Schema) -> Result<(), String> {
    let walk = Walk { writer_names: names(writer), reader_names: names(reader), reader_root: reader };
    walk.value(written, writer, resolved, reader, 0)
}

struct Walk<'s> {
    writer_names: Names<'s>,
    reader_names: Names<'s>,
    reader_root: &'s Schema,
}

/// Deepest nesting followed (a recursive type nests as deep as its data).
const MAX_DEPTH: usize = 256;

impl<'s> Walk<'s> {
    fn value(&self, written: &Value, writer: &Schema, resolved: &mut Value, reader: &Schema, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let writer = deref(&self.writer_names, writer);
        let reader = deref(&self.reader_names, reader);
        // The writer's union: the branch it wrote.
        if let (Value::Union(index, inner), Schema::Union(union)) = (written, writer) {
            let Some(branch) = union.variants().get(*index as usize) else { return Ok(()) };
            return self.value(inner, branch, resolved, reader, depth + 1);
        }
        // The reader's union: the branch apache-avro chose, by name when it can be.
        if let Schema::Union(union) = reader {
            if let (Some(name), Value::Union(chosen, _)) = (writer.name(), &*resolved) {
                // The first branch by full name (or full alias), else by unqualified name:
                // the branch `logical::misread` compared, whichever apache-avro took.
                let branches = union.variants();
                let by_name = |full: bool| branches.iter().position(|b| named(deref(&self.reader_names, b), name, full));
                if let Some(index) = by_name(true).or_else(|| by_name(false))
                    && index != *chosen as usize
                {
                    let branch = deref(&self.reader_names, &branches[index]);
                    let value = written.clone().resolve_schemata(branch, vec![self.reader_root]).map_err(|e| e.to_string())?;
                    *resolved = Value::Union(index as u32, Box::new(value));
                }
            }
            let Value::Union(chosen, inner) = resolved else { return Ok(()) };
            let Some(branch) = union.variants().get(*chosen as usize) else { return Ok(()) };
            return self.value(written, writer, inner, branch, depth + 1);
        }
        match (written, writer, resolved, reader) {
            (Value::Record(fields), Schema::Record(w), Value::Record(out), Schema::Record(r)) => {
                for (name, value) in fields {
                    let Some(writer_field) = w.lookup.get(name).and_then(|i| w.fields.get(*i)) else { continue };
                    // By name only, as apache-avro resolves fields.
                    let reader_field = r.fields.iter().find(|f| &f.name == name);
                    let Some(reader_field) = reader_field else { continue };
                    if let Some((_, slot)) = out.iter_mut().find(|(n, _)| n == &reader_field.name) {
                        self.value(value, &writer_field.schema, slot, &reader_field.schema, depth + 1)?;
                    }
                }
                Ok(())
            }
            (Value::Array(items), Schema::Array(w), Value::Array(out), Schema::Array(r)) => {
                for (item, slot) in items.iter().zip(out.iter_mut()) {
                    self.value(item, &w.items, slot, &r.items, depth + 1)?;
                }
                Ok(())
            }
            (Value::Map(entries), Schema::Map(w), Value::Map(out), Schema::Map(r)) => {
                for (key, value) in entries {
                    if let Some(slot) = out.get_mut(key) {
                        self.value(value, &w.types, slot, &r.types, depth + 1)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Schema {
        Schema::parse_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    const V1: &str = r#"{"type":"record","name":"Paid","namespace":"shop","fields":[
        {"name":"pay","type":[{"type":"record","name":"Card","fields":[{"name":"last4","type":"string"}]},
                              {"type":"record","name":"Iban","fields":[{"name":"last4","type":"string"},{"name":"bic","type":"string"}]}]}]}"#;
    const V2: &str = r#"{"type":"record","name":"Paid","namespace":"shop","fields":[
        {"name":"pay","type":[{"type":"record","name":"Card","fields":[{"name":"last4","type":"string"}]},
                              {"type":"record","name":"Iban","fields":[{"name":"last4","type":"string"},{"name":"bic","type":"string"}]}]},
        {"name":"note","type":"string","default":""}]}"#;

    fn iban() -> Value {
        let iban = Value::Record(vec![("last4".into(), Value::String("1234".into())), ("bic".into(), Value::String("DEUTDEFF".into()))]);
        Value::Record(vec![("pay".into(), Value::Union(1, Box::new(iban)))])
    }

    #[test]
    fn a_union_branch_is_chosen_by_name_not_by_shape() {
        let (writer, reader) = (parse(V1), parse(V2));
        let written = iban();
        let mut resolved = written.clone().resolve(&reader).unwrap_or_else(|e| panic!("{e}"));
        let chosen = |v: &Value| match v {
            Value::Record(fields) => match &fields[0].1 {
                Value::Union(i, _) => *i,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(chosen(&resolved), 0, "apache-avro alone reads the Iban as a Card (what this module is for)");
        assert!(has_named_unions(&reader));
        repair(&written, &writer, &mut resolved, &reader).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(chosen(&resolved), 1, "the Iban is read as an Iban");
        let Value::Record(fields) = &resolved else { panic!("record") };
        let Value::Union(_, iban) = &fields[0].1 else { panic!("union") };
        assert_eq!(**iban, Value::Record(vec![("last4".into(), Value::String("1234".into())), ("bic".into(), Value::String("DEUTDEFF".into()))]));
        assert_eq!(fields[1], ("note".to_owned(), Value::String(String::new())), "the reader's default");
    }

    #[test]
    fn nested_unions_and_arrays_are_followed_and_a_renamed_branch_is_found_by_alias() {
        let writer = parse(r#"{"type":"record","name":"Batch","namespace":"shop","fields":[{"name":"items","type":{"type":"array","items":
            [{"type":"record","name":"Card","fields":[{"name":"last4","type":"string"}]},
             {"type":"record","name":"Iban","fields":[{"name":"last4","type":"string"},{"name":"bic","type":"string"}]}]}}]}"#);
        let reader = parse(r#"{"type":"record","name":"Batch","namespace":"shop","fields":[{"name":"items","type":{"type":"array","items":
            [{"type":"record","name":"Card","fields":[{"name":"last4","type":"string"}]},
             {"type":"record","name":"BankAccount","aliases":["Iban"],"fields":[{"name":"last4","type":"string"},{"name":"bic","type":"string"}]}]}},
            {"name":"note","type":["null","string"],"default":null}]}"#);
        let card = Value::Union(0, Box::new(Value::Record(vec![("last4".into(), Value::String("1".into()))])));
        let iban = Value::Union(1, Box::new(Value::Record(vec![("last4".into(), Value::String("2".into())), ("bic".into(), Value::String("B".into()))])));
        let written = Value::Record(vec![("items".into(), Value::Array(vec![card, iban]))]);
        let mut resolved = written.clone().resolve(&reader).unwrap_or_else(|e| panic!("{e}"));
        repair(&written, &writer, &mut resolved, &reader).unwrap_or_else(|e| panic!("{e}"));
        let Value::Record(fields) = &resolved else { panic!("record") };
        let Value::Array(items) = &fields[0].1 else { panic!("array") };
        let chosen: Vec<u32> = items.iter().map(|v| if let Value::Union(i, _) = v { *i } else { panic!("{v:?}") }).collect();
        assert_eq!(chosen, [0, 1], "the Card stays a Card, the Iban is the BankAccount it was renamed to");
    }

    #[test]
    fn unions_without_two_named_branches_need_nothing() {
        assert!(!has_named_unions(&parse(r#"{"type":"record","name":"A","fields":[{"name":"n","type":["null","string"]}]}"#)));
        assert!(has_named_unions(&parse(V1)));
    }
}
