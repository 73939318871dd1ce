//! Logical types that resolution would misread.
//!
//! A datum is resolved from its writer's schema to the reader's by their Avro types;
//! logical types ride on top. Most mismatches apache-avro refuses (a `timestamp-micros`
//! value into a `timestamp-millis` field is an error), but a decimal keeps its unscaled
//! integer whatever the reader's scale: `12.3456` written with scale 4 is read as
//! `1234.56` with scale 2, silently. The Avro specification matches two decimals only when
//! their scales (and precisions) match. [`misread`] finds such a place before a datum is
//! resolved, so the record fails with a reason instead of being read 100 times off.

use apache_avro::schema::Schema;

/// Deepest nesting followed (named types referenced by name are not followed again).
const MAX_DEPTH: usize = 64;

/// The first place where a value of `writer` would be read with another decimal scale by
/// `reader`, said for an error message (`None`: nowhere).
///
/// ```
/// use apache_avro::Schema;
/// let at = |scale: u32| Schema::parse_str(&format!(
///     r#"{{"type":"record","name":"P","fields":[{{"name":"amount","type":{{"type":"bytes","logicalType":"decimal","precision":12,"scale":{scale}}}}}]}}"#
/// )).unwrap();
/// assert_eq!(herald_bus::schema::logical::misread(&at(4), &at(2)).as_deref(), Some("amount: a decimal written with scale 4 would be read with scale 2"));
/// assert_eq!(herald_bus::schema::logical::misread(&at(2), &at(2)), None);
/// ```
pub fn misread(writer: &Schema, reader: &Schema) -> Option<String> {
    walk(writer, reader, "", 0)
}

fn walk(writer: &Schema, reader: &Schema, path: &str, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return None;
    }
    let at = |path: &str| if path.is_empty() { "the value".to_owned() } else { path.to_owned() };
    match (writer, reader) {
        (Schema::Decimal(w), Schema::Decimal(r)) if w.scale != r.scale => Some(format!("{}: a decimal written with scale {} would be read with scale {}", at(path), w.scale, r.scale)),
        (Schema::Record(w), Schema::Record(r)) => r.fields.iter().find_map(|field| {
            let written = w.fields.iter().find(|f| f.name == field.name || field.aliases.as_ref().is_some_and(|a| a.contains(&f.name)))?;
            let path = if path.is_empty() { field.name.clone() } else { format!("{path}.{}", field.name) };
            walk(&written.schema, &field.schema, &path, depth + 1)
        }),
        (Schema::Array(w), Schema::Array(r)) => walk(&w.items, &r.items, &format!("{}[]", at(path)), depth + 1),
        (Schema::Map(w), Schema::Map(r)) => walk(&w.types, &r.types, &format!("{}{{}}", at(path)), depth + 1),
        // Each written branch against the reader's branches it could land in.
        (Schema::Union(w), _) => w.variants().iter().find_map(|branch| walk(branch, reader, path, depth + 1)),
        (_, Schema::Union(r)) => r.variants().iter().find_map(|branch| walk(writer, branch, path, depth + 1)),
        _ => None,
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
            _ => r#"{"type":"fixed","name":"D","size":8,"logicalType":"decimal","precision":12,"scale":4}"#,
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
        ] {
            let writer = record(&format!(r#"[{{"name":"id","type":"string"}},{{"name":"amount","type":{}}}]"#, shape.replace("{}", four)));
            let reader = record(&format!(r#"[{{"name":"amount","type":{}}},{{"name":"id","type":"string"}}]"#, shape.replace("{}", two)));
            let found = misread(&writer, &reader).unwrap_or_else(|| panic!("{shape}: not found"));
            assert!(found.starts_with(&format!("{expected}: ")), "{shape}: {found}");
            assert_eq!(misread(&writer, &writer), None, "{shape}");
        }
    }

    #[test]
    fn a_renamed_field_is_followed_by_its_alias_and_other_changes_are_not_misreads() {
        let writer = record(&format!(r#"[{{"name":"total","type":{}}}]"#, decimal(4)));
        let reader = record(&format!(r#"[{{"name":"amount","aliases":["total"],"type":{}}}]"#, decimal(2)));
        assert!(misread(&writer, &reader).is_some());
        // A plain long read as a timestamp, bytes read as a decimal, a field added: fine.
        let writer = record(r#"[{"name":"at","type":"long"},{"name":"amount","type":"bytes"}]"#);
        let reader = record(&format!(r#"[{{"name":"at","type":{{"type":"long","logicalType":"timestamp-millis"}}}},{{"name":"amount","type":{}}},{{"name":"n","type":"int","default":0}}]"#, decimal(2)));
        assert_eq!(misread(&writer, &reader), None);
    }
}
