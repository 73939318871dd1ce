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
//!
//! Where a datum is resolved to another version, `conform` first makes each logical
//! value what its reader node takes (apache-avro alone refuses some that the specification
//! reads, and sends a `date` to a `timestamp-millis` union branch), pairing nodes exactly
//! as [`misread`] pairs them.

use std::collections::HashSet;

use apache_avro::schema::{Schema, SchemaKind};
use apache_avro::types::Value;

use super::names::{named, LazyNames};

/// Deepest schema nesting compared (a named type is compared once per pair of
/// definitions, so recursive types end there); a deeper schema is refused, not passed.
const MAX_DEPTH: usize = 128;

/// Deepest value nesting [`conform`] follows (recursive types nest as deep as their
/// data); a deeper value is refused.
const MAX_VALUE_DEPTH: usize = 256;

/// Most work apache-avro may do finding the union branches of one value of another
/// version, in subtree resolutions. It finds a union's record branch by trial: each
/// record branch before the one that fits resolves the whole subtree once, the one that
/// fits twice (to test it and to keep it), so the work multiplies with each record nested
/// in a union, by the number of record branches of that union plus one (a list of 24
/// nullable nodes took 13 s; with two record branches, 16 levels took 61 s). A value
/// whose product exceeds this (a list of 18 nullable nodes, 11 levels of a union of two
/// records) is refused at once.
const MAX_UNION_WORK: u64 = 1 << 18;

/// The first place where `reader` would give a value of `writer` another meaning, said
/// for an error message (`None`: nowhere).
///
/// Nodes are paired as Herald resolves them: fields by name (apache-avro does not follow
/// field aliases), named types referenced by name followed to their definitions, records
/// of any name (apache-avro resolves a record field by field whatever its name), and each
/// union branch of the writer with the reader branch its values are resolved to (the
/// branch of the same name, else of exactly its type, else the first without a meaning
/// that reads it); a named branch without a branch of its name, with every branch of its
/// kind. Narrowings the specification does not resolve (a `long` read as an `int`, a
/// `double` as a `float`) and schemas nested too deep to check are refused too.
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
    compare(writer, reader, Pairing::Resolved)
}

/// [`misread`] as the reason a datum of `writer` is not resolved to `reader`.
pub(crate) fn resolvable(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match misread(writer, reader) {
        Some(place) => Err(format!("a logical type would change what a value means: {place}")),
        None => Ok(()),
    }
}

/// [`misread`] for a datum decoded straight with `ours`, a schema of the same parsing
/// canonical form (the same fingerprint), not resolved to it: union branches are paired
/// by position, as the decoder reads the branch index.
///
/// ```
/// use apache_avro::Schema;
/// let at = |unit: &str| Schema::parse_str(&format!(
///     r#"{{"type":"record","name":"P","fields":[{{"name":"at","type":["null",{{"type":"long","logicalType":"timestamp-{unit}"}},"long"]}}]}}"#
/// )).unwrap();
/// assert_eq!(
///     herald_bus::schema::logical::misread_straight(&at("micros"), &at("millis")).as_deref(),
///     Some("at: written as a timestamp-micros, read as a timestamp-millis")
/// );
/// // Resolved, the micros would go to the plain long.
/// assert_eq!(herald_bus::schema::logical::misread(&at("micros"), &at("millis")), None);
/// ```
pub fn misread_straight(writer: &Schema, ours: &Schema) -> Option<String> {
    compare(writer, ours, Pairing::Straight)
}

/// How two schemas' nodes are paired.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pairing {
    /// As resolution pairs them (fields by name, union branches by name or type).
    Resolved,
    /// As a datum of the writer decodes with the reader's schema directly (same
    /// canonical form): union branches by position.
    Straight,
}

fn compare(writer: &Schema, reader: &Schema, pairing: Pairing) -> Option<String> {
    let mut walk = Compare { writer_names: LazyNames::new(writer), reader_names: LazyNames::new(reader), seen: HashSet::new(), path: Vec::new(), pairing };
    walk.pair(writer, reader, 0).map(|(written, read)| {
        let place = if walk.path.is_empty() { "the value".to_owned() } else { walk.path.concat() };
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

/// The schema walk behind [`misread`].
struct Compare<'s> {
    writer_names: LazyNames<'s>,
    reader_names: LazyNames<'s>,
    /// Pairs of records already compared: each is compared once.
    seen: HashSet<(*const Schema, *const Schema)>,
    /// Where the walk is; left holding the place of the first mismatch.
    path: Vec<&'s str>,
    pairing: Pairing,
}

impl<'s> Compare<'s> {
    /// The two meanings at the first mismatch.
    fn pair(&mut self, writer: &'s Schema, reader: &'s Schema, depth: usize) -> Option<(String, String)> {
        if depth > MAX_DEPTH {
            return Some((format!("a type nested more than {MAX_DEPTH} levels deep"), "a type not checked that deep".to_owned()));
        }
        let writer = self.writer_names.deref(writer);
        let reader = self.reader_names.deref(reader);
        if let (Some(written), Some(read)) = (meaning(writer), meaning(reader)) {
            return (written != read).then_some((written, read));
        }
        // Narrowed: apache-avro truncates a long read as an int (1 700 000 000 000 became
        // -807 049 216) and rounds a double read as a float; the specification resolves
        // neither.
        match (underlying(writer), underlying(reader)) {
            ("long", "int") => return Some(("a long".to_owned(), "an int (narrower)".to_owned())),
            ("double", "float") => return Some(("a double".to_owned(), "a float (narrower)".to_owned())),
            _ => {}
        }
        match (writer, reader) {
            (Schema::Union(w), Schema::Union(r)) if self.pairing == Pairing::Straight => {
                w.variants().iter().zip(r.variants()).find_map(|(written, read)| self.pair(written, read, depth + 1))
            }
            (Schema::Union(w), _) => w.variants().iter().find_map(|branch| self.pair(branch, reader, depth + 1)),
            (_, Schema::Union(r)) => match branch_for(writer, r.variants(), &self.reader_names) {
                Some(branch) => self.pair(writer, branch, depth + 1),
                // A named type without a branch of its name: apache-avro takes the first
                // branch of its kind that the value resolves to, so each is compared.
                None if writer.name().is_some() => {
                    let candidates: Vec<&'s Schema> = of_kind(writer, r.variants(), &self.reader_names).collect();
                    candidates.into_iter().find_map(|branch| self.pair(writer, branch, depth + 1))
                }
                None => None,
            },
            (Schema::Record(w), Schema::Record(r)) => {
                if !self.seen.insert((writer as *const Schema, reader as *const Schema)) {
                    return None;
                }
                let straight = self.pairing == Pairing::Straight;
                r.fields.iter().enumerate().find_map(|(i, field)| {
                    // Resolved: by name only, as apache-avro resolves fields (it does not
                    // follow aliases). Straight: by position, as the decoder reads them.
                    let written = if straight { w.fields.get(i) } else { w.fields.iter().find(|f| f.name == field.name) }?;
                    let mark = self.path.len();
                    if mark > 0 {
                        self.path.push(".");
                    }
                    self.path.push(&field.name);
                    let found = self.pair(&written.schema, &field.schema, depth + 1);
                    if found.is_none() {
                        self.path.truncate(mark);
                    }
                    found
                })
            }
            (Schema::Array(w), Schema::Array(r)) => self.nested(&w.items, &r.items, "[]", depth),
            (Schema::Map(w), Schema::Map(r)) => self.nested(&w.types, &r.types, "{}", depth),
            _ => None,
        }
    }

    fn nested(&mut self, writer: &'s Schema, reader: &'s Schema, mark: &'static str, depth: usize) -> Option<(String, String)> {
        self.path.push(mark);
        let found = self.pair(writer, reader, depth + 1);
        if found.is_none() {
            self.path.pop();
        }
        found
    }
}

/// The reader branch Herald resolves a value of `written` (not a union, references
/// followed) to: for a named type the first branch of its full name (or naming it in full
/// among its aliases), else the first of its unqualified name or alias (as Java's resolver
/// chooses, and `unions::repair`); otherwise the branch of exactly its type, logical type
/// included;
/// otherwise the first branch without a meaning that its underlying type reads as
/// (promotions included: an `int` as a `long`, a `float` or a `double`, a `string` as
/// `bytes`). A `date` is never sent to a `timestamp-millis` branch, although apache-avro,
/// left to itself, resolves an `int` into the first branch that takes one.
fn branch_for<'s>(written: &Schema, branches: &'s [Schema], names: &LazyNames<'s>) -> Option<&'s Schema> {
    let branches = || branches.iter().map(|b| names.deref(b));
    if let Some(name) = written.name() {
        // In the order `unions::repair` chooses.
        return branches().find(|b| named(b, name, true)).or_else(|| branches().find(|b| named(b, name, false)));
    }
    let kind = SchemaKind::from(written);
    branches().find(|b| SchemaKind::from(*b) == kind).or_else(|| {
        let from = underlying(written);
        branches().find(|b| meaning(b).is_none() && reads_as(from, underlying(b)))
    })
}

/// The branches (references followed) of the same kind as `written`: those apache-avro
/// tries a named value of it in.
fn of_kind<'s, 'a>(written: &'a Schema, branches: &'s [Schema], names: &'a LazyNames<'s>) -> impl Iterator<Item = &'s Schema> + 'a
where
    's: 'a,
{
    let kind = SchemaKind::from(written);
    branches.iter().map(|b| names.deref(b)).filter(move |b| SchemaKind::from(*b) == kind)
}

/// Whether a value of the primitive type `from` resolves to `to` (the specification's
/// promotions).
fn reads_as(from: &str, to: &str) -> bool {
    from == to || matches!((from, to), ("int", "long" | "float" | "double") | ("long", "float" | "double") | ("float", "double") | ("string", "bytes") | ("bytes", "string"))
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

/// `value` (a datum of `writer`) made ready for apache-avro to resolve to `reader`:
/// every logical value becomes what its reader node takes, so that the reader's logical
/// types apply, not the writer's, and every union branch is the one [`misread`] compared.
///
/// - Read where the reader has no logical type (or an annotation without a meaning), a
///   logical value becomes its primitive, promoted to the reader's type: a uuid its
///   string, a date its int, a timestamp its long, a decimal its bytes, a duration its
///   12 bytes. apache-avro refuses a uuid as a plain string, a timestamp as a plain long,
///   a decimal as plain bytes, though the specification reads an annotation the reader
///   does not share as its underlying type.
/// - A decimal (or plain bytes read as one) is sign-extended to the length the reader's
///   precision needs: apache-avro refuses a decimal whose bytes are fewer than its
///   precision could need, and Java, fastavro and apache-avro itself write the fewest
///   bytes that hold the value (`1.00` at scale 2 in one byte).
/// - In a reader union, the value takes the exact type of the branch chosen as
///   [`misread`] chooses it, so apache-avro's union resolution (the branch of the value's
///   type, else the first branch the value resolves to) lands there: without this a
///   `date` read into `["null", {"type":"long","logicalType":"timestamp-millis"}, "long"]`
///   became a timestamp of as many milliseconds as it had days.
///
/// Meaning changes are refused before this ([`misread`]).
pub(crate) fn conform(value: &mut Value, writer: &Schema, reader: &Schema) -> Result<(), String> {
    let walk = Conform { writer_names: LazyNames::new(writer), reader_names: LazyNames::new(reader) };
    walk.value(value, writer, reader, Depth { all: 0, union_work: 1 })
}

/// How deep [`conform`] is in a value.
#[derive(Clone, Copy)]
struct Depth {
    /// Nodes.
    all: usize,
    /// The product, over the named values in reader unions above, of that union's
    /// branches of their kind plus one (see [`MAX_UNION_WORK`]).
    union_work: u64,
}

impl Depth {
    fn down(self) -> Self {
        Depth { all: self.all + 1, ..self }
    }
}

/// The value walk behind [`conform`], in place: a value that needs no change is not
/// touched.
struct Conform<'s> {
    writer_names: LazyNames<'s>,
    reader_names: LazyNames<'s>,
}

impl<'s> Conform<'s> {
    fn value(&self, value: &mut Value, writer: &'s Schema, reader: &'s Schema, depth: Depth) -> Result<(), String> {
        if depth.all > MAX_VALUE_DEPTH {
            return Err(format!("the value is nested more than {MAX_VALUE_DEPTH} levels deep"));
        }
        let writer = self.writer_names.deref(writer);
        let reader = self.reader_names.deref(reader);
        // The writer's union: the branch it wrote, kept as a union value (apache-avro and
        // `unions::repair` both take one).
        if let Schema::Union(w) = writer {
            if let Value::Union(index, inner) = value
                && let Some(branch) = w.variants().get(*index as usize)
            {
                return self.value(inner, branch, reader, depth.down());
            }
            return Ok(());
        }
        if let Schema::Union(r) = reader {
            let mut depth = depth.down();
            if writer.name().is_some() {
                let tried = of_kind(writer, r.variants(), &self.reader_names).count() as u64;
                depth.union_work = depth.union_work.saturating_mul(tried + 1);
                if depth.union_work > MAX_UNION_WORK {
                    return Err("the value nests too many records in unions, one in another: apache-avro's resolution of it would take time that multiplies with each level".to_owned());
                }
            }
            return match branch_for(writer, r.variants(), &self.reader_names) {
                Some(branch) => self.value(value, writer, branch, depth),
                None => Ok(()),
            };
        }
        match (value, writer, reader) {
            (Value::Record(fields), Schema::Record(w), Schema::Record(r)) => {
                for (name, value) in fields {
                    // By name only, as apache-avro resolves fields.
                    let written = w.lookup.get(name.as_str()).and_then(|i| w.fields.get(*i));
                    let read = r.fields.iter().find(|f| &f.name == name);
                    if let (Some(written), Some(read)) = (written, read) {
                        self.value(value, &written.schema, &read.schema, depth.down())?;
                    }
                }
            }
            (Value::Array(items), Schema::Array(w), Schema::Array(r)) => {
                for item in items {
                    self.value(item, &w.items, &r.items, depth.down())?;
                }
            }
            (Value::Map(entries), Schema::Map(w), Schema::Map(r)) => {
                for value in entries.values_mut() {
                    self.value(value, &w.types, &r.types, depth.down())?;
                }
            }
            (value, _, reader) => leaf(value, reader)?,
        }
        Ok(())
    }
}

/// A value that is not a record, array, map or union, made what `reader` takes.
fn leaf(value: &mut Value, reader: &Schema) -> Result<(), String> {
    if let Schema::Decimal(d) = reader {
        let bytes = match value {
            Value::Decimal(decimal) => match Vec::<u8>::try_from(&*decimal) {
                Ok(bytes) => bytes,
                Err(_) => return Ok(()),
            },
            Value::Bytes(bytes) | Value::Fixed(_, bytes) => std::mem::take(bytes),
            _ => return Ok(()),
        };
        let len = match &*d.inner {
            Schema::Fixed(f) => f.size,
            _ => bytes_for_precision(d.precision),
        };
        *value = Value::Decimal(apache_avro::Decimal::from(sign_extend(bytes, len)));
        return Ok(());
    }
    if SchemaKind::from(&*value) == SchemaKind::from(reader) || meaning(reader).is_some() {
        return Ok(());
    }
    let owned = std::mem::replace(value, Value::Null);
    *value = promote(to_primitive(owned), reader);
    match (&*value, reader) {
        // Left as bytes, apache-avro would try the union's branches in turn and might
        // take another than the one compared.
        (Value::Bytes(_), Schema::String) => Err("bytes that are not UTF-8 written where the reader reads a string".to_owned()),
        _ => Ok(()),
    }
}

/// A logical value as its primitive.
fn to_primitive(value: Value) -> Value {
    match value {
        Value::Uuid(u) => Value::String(u.to_string()),
        Value::Date(d) | Value::TimeMillis(d) => Value::Int(d),
        Value::TimeMicros(t) | Value::TimestampMillis(t) | Value::TimestampMicros(t) | Value::TimestampNanos(t) | Value::LocalTimestampMillis(t) | Value::LocalTimestampMicros(t) | Value::LocalTimestampNanos(t) => Value::Long(t),
        Value::Decimal(decimal) => match Vec::<u8>::try_from(&decimal) {
            Ok(bytes) => Value::Bytes(bytes),
            Err(_) => Value::Decimal(decimal),
        },
        Value::Duration(d) => Value::Fixed(12, <[u8; 12]>::from(d).to_vec()),
        other => other,
    }
}

/// A primitive value as exactly the primitive type of `reader` where the specification
/// promotes it (so a union branch is found by type, not by trial); otherwise unchanged.
fn promote(value: Value, reader: &Schema) -> Value {
    match (value, reader) {
        (Value::Int(n), Schema::Long) => Value::Long(n.into()),
        (Value::Int(n), Schema::Float) => Value::Float(n as f32),
        (Value::Int(n), Schema::Double) => Value::Double(n.into()),
        (Value::Long(n), Schema::Float) => Value::Float(n as f32),
        (Value::Long(n), Schema::Double) => Value::Double(n as f64),
        (Value::Float(x), Schema::Double) => Value::Double(x.into()),
        (Value::String(s), Schema::Bytes) => Value::Bytes(s.into_bytes()),
        (Value::Bytes(b), Schema::String) => match String::from_utf8(b) {
            Ok(s) => Value::String(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        },
        (Value::Bytes(b), Schema::Fixed(f)) if b.len() == f.size => Value::Fixed(f.size, b),
        (value, _) => value,
    }
}

/// The fewest bytes whose two's complement holds every unscaled value of `precision`
/// digits, by the rule apache-avro checks a decimal's length against.
fn bytes_for_precision(precision: usize) -> usize {
    (1..=1024).find(|&len: &usize| ((2f64).powi(8 * len as i32 - 1) - 1.0).log10().floor() as usize >= precision).unwrap_or(1024)
}

/// Two's-complement big-endian `bytes` widened to `len` bytes (never narrowed).
fn sign_extend(bytes: Vec<u8>, len: usize) -> Vec<u8> {
    if bytes.len() >= len {
        return bytes;
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xFF } else { 0 };
    let mut out = vec![fill; len - bytes.len()];
    out.extend_from_slice(&bytes);
    out
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
        // A writer branch goes to the reader branch of exactly its type: a decimal of
        // another scale there is found.
        let (two, four) = (record(&format!(r#"[{{"name":"at","type":["null",{}]}}]"#, decimal(2))), record(&format!(r#"[{{"name":"at","type":["null",{}]}}]"#, decimal(4))));
        assert_eq!(misread(&four, &two).as_deref(), Some("at: written as a decimal with scale 4, read as a decimal with scale 2"));
        // A branch of a type the reader's union lacks goes to no branch, or to one without a
        // meaning (a date to a plain long, never to a timestamp): no misread, the values of
        // that branch alone are refused (codec's tests).
        let micros = record(&format!(r#"[{{"name":"at","type":{}}}]"#, both.replace("timestamp-millis", "timestamp-micros")));
        assert_eq!(misread(&micros, &schema), None);
        let date = record(r#"[{"name":"at","type":["null",{"type":"int","logicalType":"date"}]}]"#);
        let promoted = record(r#"[{"name":"at","type":["null",{"type":"long","logicalType":"timestamp-millis"},"long"]}]"#);
        assert_eq!(misread(&date, &promoted), None);
    }

    /// A named type defined in one field and referenced in another is compared where
    /// either side defines it: with the fields reordered, a unit change used to hide
    /// behind the reference (read 1000 times off).
    #[test]
    fn named_types_referenced_by_name_are_compared() {
        let stamp = |unit: &str| format!(r#"{{"type":"record","name":"Stamp","fields":[{{"name":"at","type":{{"type":"long","logicalType":"timestamp-{unit}"}}}}]}}"#);
        let writer = record(&format!(r#"[{{"name":"start","type":{}}},{{"name":"end","type":"t.Stamp"}}]"#, stamp("micros")));
        let reader = record(&format!(r#"[{{"name":"end","type":{}}},{{"name":"start","type":"t.Stamp"}}]"#, stamp("millis")));
        assert_eq!(misread(&writer, &reader).as_deref(), Some("end.at: written as a timestamp-micros, read as a timestamp-millis"));
        assert_eq!(misread(&writer, &writer), None);
        assert_eq!(misread(&reader, &reader), None);
        // A decimal on a named fixed, referenced from a union.
        let money = |scale: u32| format!(r#"{{"type":"fixed","name":"Money","size":8,"logicalType":"decimal","precision":18,"scale":{scale}}}"#);
        let writer = record(&format!(r#"[{{"name":"fare","type":{}}},{{"name":"tip","type":["null","t.Money"]}}]"#, money(4)));
        let reader = record(&format!(r#"[{{"name":"tip","type":["null",{}]}},{{"name":"fare","type":"t.Money"}}]"#, money(2)));
        assert_eq!(misread(&writer, &reader).as_deref(), Some("tip: written as a decimal with scale 4, read as a decimal with scale 2"));
        // A recursive type ends.
        let list = |unit: &str| record(&format!(r#"[{{"name":"at","type":{{"type":"long","logicalType":"timestamp-{unit}"}}}},{{"name":"next","type":["null","t.R"]}}]"#));
        assert_eq!(misread(&list("millis"), &list("millis")), None);
        assert!(misread(&list("micros"), &list("millis")).is_some());
    }

    /// apache-avro resolves a nested record field by field whatever its name, so records
    /// of other names are compared too.
    #[test]
    fn nested_records_of_other_names_are_compared() {
        let inner = |name: &str, unit: &str| format!(r#"{{"type":"record","name":"{name}","fields":[{{"name":"at","type":{{"type":"long","logicalType":"timestamp-{unit}"}}}}]}}"#);
        let writer = record(&format!(r#"[{{"name":"when","type":{}}}]"#, inner("Old", "micros")));
        let reader = record(&format!(r#"[{{"name":"when","type":{}}}]"#, inner("New", "millis")));
        assert_eq!(misread(&writer, &reader).as_deref(), Some("when.at: written as a timestamp-micros, read as a timestamp-millis"));
    }

    /// A named writer branch goes where `unions::repair` puts it (full name or full alias
    /// first), and one whose name the reader's union lacks is compared with every branch
    /// of its kind (apache-avro takes the first it fits).
    #[test]
    fn named_union_branches_are_compared_where_they_land() {
        let rec = |name: &str, extra: &str, scale: u32| format!(r#"{{"type":"record","name":"{name}"{extra},"fields":[{{"name":"amount","type":{}}}]}}"#, decimal(scale));
        let writer = record(&format!(r#"[{{"name":"pay","type":["null",{}]}}]"#, rec("a.Card", "", 4)));
        let reader = record(&format!(r#"[{{"name":"pay","type":["null",{},{}]}}]"#, rec("b.Card", "", 4), rec("c.Payment", r#","aliases":["a.Card"]"#, 2)));
        assert_eq!(misread(&writer, &reader).as_deref(), Some("pay.amount: written as a decimal with scale 4, read as a decimal with scale 2"));
        let renamed = record(&format!(r#"[{{"name":"pay","type":["null",{}]}}]"#, rec("t.New", "", 2)));
        let old = record(&format!(r#"[{{"name":"pay","type":["null",{}]}}]"#, rec("t.Old", "", 4)));
        assert_eq!(misread(&old, &renamed).as_deref(), Some("pay.amount: written as a decimal with scale 4, read as a decimal with scale 2"));
    }

    /// Narrowings the specification does not resolve, which apache-avro reads silently
    /// wrong, are refused.
    #[test]
    fn a_long_read_as_an_int_or_a_double_as_a_float_is_refused() {
        let of = |t: &str| record(&format!(r#"[{{"name":"n","type":{t}}}]"#));
        assert_eq!(misread(&of(r#""long""#), &of(r#""int""#)).as_deref(), Some("n: written as a long, read as an int (narrower)"));
        assert_eq!(misread(&of(r#"{"type":"long","logicalType":"timestamp-millis"}"#), &of(r#""int""#)).as_deref(), Some("n: written as a long, read as an int (narrower)"));
        assert_eq!(misread(&of(r#""double""#), &of(r#"["null","float"]"#)), None, "no branch of its type: refused by resolution");
        assert!(misread(&of(r#""double""#), &of(r#""float""#)).is_some());
        assert_eq!(misread(&of(r#""int""#), &of(r#""long""#)), None, "a promotion");
    }

    /// A schema nested deeper than the check goes is refused, not passed unchecked.
    #[test]
    fn a_schema_too_deep_to_check_is_refused() {
        // Built as JSON values: serde_json's parser stops at 128 levels of JSON.
        let nest = |scale: u32| {
            let mut inner: serde_json::Value = serde_json::from_str(&format!(r#"{{"type":"record","name":"L0","fields":[{{"name":"amount","type":{}}}]}}"#, decimal(scale))).expect("json");
            for level in 1..45 {
                inner = serde_json::json!({"type": "record", "name": format!("L{level}"), "fields": [{"name": "next", "type": ["null", inner]}]});
            }
            Schema::parse(&inner).expect("schema")
        };
        let found = misread(&nest(4), &nest(2)).expect("refused");
        assert!(found.contains("nested more than 128 levels"), "{found}");
    }

    #[test]
    fn decimals_are_widened_to_what_the_reader_precision_needs() {
        assert_eq!(bytes_for_precision(2), 1);
        assert_eq!(bytes_for_precision(3), 2);
        assert_eq!(bytes_for_precision(12), 6);
        assert_eq!(bytes_for_precision(18), 8);
        assert_eq!(bytes_for_precision(38), 16);
        assert_eq!(sign_extend(vec![0x64], 3), vec![0, 0, 0x64]);
        assert_eq!(sign_extend(vec![0x9C], 3), vec![0xFF, 0xFF, 0x9C], "-100");
        assert_eq!(sign_extend(vec![], 2), vec![0, 0]);
        assert_eq!(sign_extend(vec![1, 2, 3], 2), vec![1, 2, 3], "never narrowed");
    }

    #[test]
    fn fields_pair_by_name_as_apache_avro_resolves_them_and_other_changes_are_not_misreads() {
        // apache-avro does not follow field aliases: the reader's `amount` is the writer's
        // `amount`, not its `total` (which it never reads).
        let writer = record(&format!(r#"[{{"name":"total","type":"bytes"}},{{"name":"amount","type":{}}}]"#, decimal(4)));
        let reader = record(&format!(r#"[{{"name":"amount","aliases":["total"],"type":{}}}]"#, decimal(2)));
        assert_eq!(misread(&writer, &reader).as_deref(), Some("amount: written as a decimal with scale 4, read as a decimal with scale 2"));
        let writer = record(&format!(r#"[{{"name":"total","type":{}}}]"#, decimal(4)));
        assert_eq!(misread(&writer, &reader), None, "never read");
        // Decoded straight (the same canonical form), fields pair by position.
        let writer = record(r#"[{"name":"b","type":"long"},{"name":"a","type":{"type":"long","logicalType":"timestamp-micros"}}]"#);
        let ours = record(r#"[{"name":"b","type":"long"},{"name":"a","aliases":["b"],"type":{"type":"long","logicalType":"timestamp-millis"}}]"#);
        assert_eq!(misread_straight(&writer, &ours).as_deref(), Some("a: written as a timestamp-micros, read as a timestamp-millis"));
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
