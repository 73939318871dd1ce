//! Logical types whose mismatch changes what a value means.
//!
//! The fingerprint (of the parsing canonical form) does not cover logical types: a
//! producer's `timestamp-micros` has the fingerprint of our `timestamp-millis`, its
//! `decimal` of scale 4 that of our scale 2. Decoded as ours, its values would be read
//! 1000 or 100 times off. Resolved from the writer's schema to ours, apache-avro refuses a
//! timestamp of another unit but keeps a decimal's unscaled integer whatever the reader's
//! scale (`12.3456` written with scale 4 is read as `1234.56`). The Avro specification
//! matches two decimals only when their scales match. [`misread`] finds the first place
//! where both sides give a value a meaning and the meanings differ, so such a record fails
//! with that reason instead of being read wrong.
//!
//! Annotations that change no meaning are not misreads: a `uuid` string read as a plain
//! string, a `timestamp-millis` long read as a plain long (or the other way round), a
//! decimal's precision.

use apache_avro::schema::Schema;

/// Deepest nesting followed (named types referenced by name are not followed again).
const MAX_DEPTH: usize = 64;

/// The first place where `reader` would give a value of `writer` another meaning, said
/// for an error message (`None`: nowhere).
///
/// ```
/// use apache_avro::Schema;
/// let at = |amount: &str| Schema::parse_str(&format!(
///     r#"{{"type":"record","name":"P","fields":[{{"name":"amount","type":{amount}}}]}}"#
/// )).unwrap();
/// let scale = |s: u32| at(&format!(r#"{{"type":"bytes","logicalType":"decimal","precision":12,"scale":{s}}}"#));
/// assert_eq!(
///     herald_bus::schema::logical::misread(&scale(4), &scale(2)).as_deref(),
///     Some("amount: written as a decimal with scale 4, read as a decimal with scale 2")
/// );
/// assert_eq!(herald_bus::schema::logical::misread(&scale(2), &scale(2)), None);
/// let uuid = at(r#"{"type":"string","logicalType":"uuid"}"#);
/// assert_eq!(herald_bus::schema::logical::misread(&uuid, &at(r#""string""#)), None, "no meaning changes");
/// ```
pub fn misread(writer: &Schema, reader: &Schema) -> Option<String> {
    let mut path = Vec::new();
    walk(writer, reader, &mut path, 0).map(|(written, read)| {
        let place = if path.is_empty() { "the value".to_owned() } else { path.concat() };
        format!("{place}: written as {written}, read as {read}")
    })
}

/// What a logical type says its value means, where reading it as another would change
/// the value (`None`: a plain type, or an annotation such as `uuid`).
fn meaning(schema: &Schema) -> Option<String> {
    let name = match schema {
        Schema::Decimal(d) => return Some(format!("a decimal with scale {}", d.scale)),
        Schema::BigDecimal => "a big-decimal",
        Schema::Date => "a date (days)",
        Schema::TimeMillis => "a time-millis",
        Schema::TimeMicros => "a time-micros",
        Schema::TimestampMillis => "a timestamp-millis",
        Schema::TimestampMicros => "a timestamp-micros",
        Schema::TimestampNanos => "a timestamp-nanos",
        Schema::LocalTimestampMillis => "a local-timestamp-millis",
        Schema::LocalTimestampMicros => "a local-timestamp-micros",
        Schema::LocalTimestampNanos => "a local-timestamp-nanos",
        Schema::Duration => "a duration",
        _ => return None,
    };
    Some(name.to_owned())
}

/// The two meanings at the first mismatch; `path` is left holding its place. Only nodes
/// that resolution pairs are compared: records of the same name, and each union branch of
/// the writer with the reader branch it resolves to.
fn walk<'s>(writer: &'s Schema, reader: &'s Schema, path: &mut Vec<&'s str>, depth: usize) -> Option<(String, String)> {
    if depth > MAX_DEPTH {
        return None;
    }
    if let (Some(written), Some(read)) = (meaning(writer), meaning(reader)) {
        return (written != read).then_some((written, read));
    }
    match (writer, reader) {
        (Schema::Record(w), Schema::Record(r)) if same_name(writer, reader) || r.aliases.as_ref().is_some_and(|a| a.iter().any(|a| a.name() == w.name.name)) => r.fields.iter().find_map(|field| {
            let written = w.fields.iter().find(|f| f.name == field.name || field.aliases.as_ref().is_some_and(|a| a.contains(&f.name)))?;
            let mark = path.len();
            if mark > 0 {
                path.push(".");
            }
            path.push(&field.name);
            let found = walk(&written.schema, &field.schema, path, depth + 1);
            if found.is_none() {
                path.truncate(mark);
            }
            found
        }),
        (Schema::Array(w), Schema::Array(r)) => nested(&w.items, &r.items, "[]", path, depth),
        (Schema::Map(w), Schema::Map(r)) => nested(&w.types, &r.types, "{}", path, depth),
        (Schema::Union(w), Schema::Union(r)) => w.variants().iter().find_map(|branch| walk(branch, branch_for(branch, r.variants())?, path, depth + 1)),
        (Schema::Union(w), _) => w.variants().iter().find_map(|branch| walk(branch, branch_for(branch, std::slice::from_ref(reader))?, path, depth + 1)),
        (_, Schema::Union(r)) => walk(writer, branch_for(writer, r.variants())?, path, depth + 1),
        _ => None,
    }
}

/// The reader branch a written value of `written` resolves to: the one of the same name
/// for a named type (full name, then unqualified), otherwise the first unnamed one of the
/// same underlying type.
fn branch_for<'s>(written: &Schema, branches: &'s [Schema]) -> Option<&'s Schema> {
    if written.name().is_some() {
        return branches.iter().find(|b| b.name() == written.name()).or_else(|| branches.iter().find(|b| same_name(b, written)));
    }
    branches.iter().find(|b| b.name().is_none() && underlying(b) == underlying(written))
}

/// Whether both are named types of the same unqualified name.
fn same_name(a: &Schema, b: &Schema) -> bool {
    matches!((a.name(), b.name()), (Some(a), Some(b)) if a.name == b.name)
}

/// The Avro type a schema is encoded as, logical types as their primitive.
fn underlying(schema: &Schema) -> &'static str {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int | Schema::Date | Schema::TimeMillis => "int",
        Schema::Long | Schema::TimeMicros | Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimestampNanos | Schema::LocalTimestampMillis | Schema::LocalTimestampMicros | Schema::LocalTimestampNanos => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes | Schema::BigDecimal => "bytes",
        Schema::String | Schema::Uuid => "string",
        Schema::Decimal(d) => underlying(&d.inner),
        Schema::Fixed(_) | Schema::Duration => "fixed",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Union(_) => "union",
        Schema::Record(_) => "record",
        Schema::Enum(_) => "enum",
        Schema::Ref { .. } => "ref",
    }
}

fn nested<'s>(writer: &'s Schema, reader: &'s Schema, mark: &'static str, path: &mut Vec<&'s str>, depth: usize) -> Option<(String, String)> {
    path.push(mark);
    let found = walk(writer, reader, path, depth + 1);
    if found.is_none() {
        path.pop();
    }
    found
}

/// `value` with every logical value as its primitive (a uuid as its string, a date or a
/// time-millis as its int, a time-micros or a timestamp as its long), so that resolution
/// to a reader applies the reader's logical types, not the writer's. apache-avro refuses
/// to resolve a uuid value to a plain string, a timestamp to a plain long or a date to a
/// plain int, though the spec reads an annotation the reader does not share as its
/// underlying type. Meaning changes are refused before this ([`misread`]); decimals and
/// durations stay as they are.
pub(crate) fn to_primitives(value: apache_avro::types::Value) -> apache_avro::types::Value {
    use apache_avro::types::Value as V;
    match value {
        V::Uuid(u) => V::String(u.to_string()),
        V::Date(d) | V::TimeMillis(d) => V::Int(d),
        V::TimeMicros(t) | V::TimestampMillis(t) | V::TimestampMicros(t) | V::TimestampNanos(t) | V::LocalTimestampMillis(t) | V::LocalTimestampMicros(t) | V::LocalTimestampNanos(t) => V::Long(t),
        V::Record(fields) => V::Record(fields.into_iter().map(|(name, v)| (name, to_primitives(v))).collect()),
        V::Array(items) => V::Array(items.into_iter().map(to_primitives).collect()),
        V::Map(entries) => V::Map(entries.into_iter().map(|(k, v)| (k, to_primitives(v))).collect()),
        V::Union(branch, inner) => V::Union(branch, Box::new(to_primitives(*inner))),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"R","namespace":"t","fields":{fields}}}"#)).expect("schema")
    }

    const fn decimal(scale: u32) -> &'static str {
        match scale {
            2 => r#"{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}"#,
            _ => r#"{"type":"bytes","logicalType":"decimal","precision":12,"scale":4}"#,
        }
    }

    #[test]
    fn a_decimal_scale_is_found_in_nested_records_arrays_maps_and_unions() {
        let (two, four) = (decimal(2), decimal(4));
        for (shape, expected) in [
            ("{}", "amount"),
            (r#"{"type":"array","items":{}}"#, "amount[]"),
            (r#"{"type":"map","values":{}}"#, "amount{}"),
            (r#"["null",{}]"#, "amount"),
            (r#"{"type":"record","name":"Inner","fields":[{"name":"v","type":{}}]}"#, "amount.v"),
            (r#"{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"v","type":{}}]}}"#, "amount[].v"),
        ] {
            let writer = record(&format!(r#"[{{"name":"id","type":"string"}},{{"name":"amount","type":{}}}]"#, shape.replace("{}", four)));
            let reader = record(&format!(r#"[{{"name":"amount","type":{}}},{{"name":"id","type":"string"}}]"#, shape.replace("{}", two)));
            let found = misread(&writer, &reader).unwrap_or_else(|| panic!("{shape}: not found"));
            assert!(found.starts_with(&format!("{expected}: ")), "{shape}: {found}");
            assert_eq!(misread(&writer, &writer), None, "{shape}");
        }
    }

    /// Branches are paired as resolution pairs them: a union of two meaningful branches is
    /// not a misread of itself (each branch was compared with every other), nor are fields
    /// of two records of other names in one union.
    #[test]
    fn union_branches_are_compared_only_with_the_branch_they_resolve_to() {
        let both = r#"["null",{"type":"long","logicalType":"timestamp-millis"},{"type":"int","logicalType":"date"}]"#;
        let schema = record(&format!(r#"[{{"name":"at","type":{both}}}]"#));
        assert_eq!(misread(&schema, &schema), None);
        let named = record(
            r#"[{"name":"x","type":[{"type":"record","name":"A","fields":[{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]},{"type":"record","name":"B","fields":[{"name":"at","type":{"type":"int","logicalType":"date"}}]}]}]"#,
        );
        assert_eq!(misread(&named, &named), None);
        // The branch that does resolve to another unit is found.
        let micros = record(&format!(r#"[{{"name":"at","type":{}}}]"#, both.replace("timestamp-millis", "timestamp-micros")));
        assert_eq!(misread(&micros, &schema).as_deref(), Some("at: written as a timestamp-micros, read as a timestamp-millis"));
    }

    #[test]
    fn a_renamed_field_is_followed_by_its_alias_and_other_changes_are_not_misreads() {
        let writer = record(&format!(r#"[{{"name":"total","type":{}}}]"#, decimal(4)));
        let reader = record(&format!(r#"[{{"name":"amount","aliases":["total"],"type":{}}}]"#, decimal(2)));
        assert!(misread(&writer, &reader).is_some());
        // A plain long read as a timestamp, bytes read as a decimal, a field added, a uuid
        // read as a string, a timestamp read as a plain long: no meaning changes.
        let writer = record(r#"[{"name":"at","type":"long"},{"name":"amount","type":"bytes"},{"name":"id","type":{"type":"string","logicalType":"uuid"}},{"name":"t","type":{"type":"long","logicalType":"timestamp-micros"}}]"#);
        let reader = record(&format!(r#"[{{"name":"at","type":{{"type":"long","logicalType":"timestamp-millis"}}}},{{"name":"amount","type":{}}},{{"name":"n","type":"int","default":0}},{{"name":"id","type":"string"}},{{"name":"t","type":"long"}}]"#, decimal(2)));
        assert_eq!(misread(&writer, &reader), None);
        // A unit that differs does.
        let writer = record(r#"[{"name":"t","type":{"type":"long","logicalType":"timestamp-micros"}}]"#);
        let reader = record(r#"[{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}}]"#);
        assert_eq!(misread(&writer, &reader).as_deref(), Some("t: written as a timestamp-micros, read as a timestamp-millis"));
    }
}
