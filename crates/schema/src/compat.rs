//! Can a reader schema read data written with a writer schema? The Avro specification's
//! schema-resolution rules, as a yes/no with every reason.
//!
//! The rules, from the spec's *Schema Resolution* section, checked for every value the
//! writer schema allows:
//!
//! - **Primitives** match when equal, or by promotion: `int` → `long`, `float`, `double`;
//!   `long` → `float`, `double`; `float` → `double`; `string` ↔ `bytes`.
//! - **Records** match by unqualified name, or when a reader alias names the writer's full
//!   name. Reader fields are found in the writer by name, then by the reader field's
//!   aliases; a reader field absent from the writer needs a `default`; writer fields
//!   absent from the reader are skipped.
//! - **Enums** match by name as records do; a writer symbol the reader lacks needs the
//!   reader enum's `default`.
//! - **Fixed** match by name as records do, and by size.
//! - **Arrays** and **maps** match when their items (values) do.
//! - **Unions**: a non-union writer is resolved against the *first* reader branch that
//!   matches it (the shallow match above: same type or promotion, same name); that branch
//!   must then read it. A writer union needs every branch readable, since any may have
//!   been written. A non-union reader must read every branch of a writer union.
//! - **Named types** are followed by reference, and a record pair already being checked
//!   counts as compatible, so recursive schemas terminate.
//!
//! Logical types resolve by their underlying types, as in the spec, with one exception:
//! two *different* logical types on the same underlying type (`decimal(10,2)` and
//! `decimal(10,4)`, `timestamp-millis` and `timestamp-micros`, `date` and `time-millis`,
//! ...) are incompatible both ways ([`Rule::LogicalType`]). The data would decode but mean
//! something else, and the parsing canonical form (so the fingerprint) cannot tell the two
//! apart. A logical type added or dropped, or one on a promoted type, is still accepted.
//!
//! ```
//! use herald_schema::{Avsc, compat};
//! let old = Avsc::parse(r#"{"type":"record","name":"T","namespace":"x","fields":[{"name":"n","type":"long"}]}"#)?;
//! let new = Avsc::parse(r#"{"type":"record","name":"T","namespace":"x","fields":[{"name":"n","type":"int"}]}"#)?;
//! assert!(compat::can_read(&old, &new).is_ok()); // long reads int
//! let err = compat::can_read(&new, &old).unwrap_err();
//! assert_eq!(err.to_string(), "field `x.T.n`: reader type int cannot read writer type long");
//! # Ok::<(), herald_schema::ParseError>(())
//! ```

use std::collections::HashSet;
use std::fmt;

use crate::avsc::Avsc;
use crate::graph::{Graph, Kind, Named, Node};

/// Checks that `reader` can read every datum written with `writer`.
///
/// Returns every violation found (not only the first), each with the path of the field
/// where it occurs and the rule it breaks.
pub fn can_read(reader: &Avsc, writer: &Avsc) -> Result<(), Incompatibility> {
    let mut checker = Checker { reader: &reader.graph, writer: &writer.graph, in_progress: HashSet::new(), compatible: HashSet::new() };
    let root = At::root(&reader.graph);
    let violations = checker.check(&reader.graph.root, &writer.graph.root, &root);
    if violations.is_empty() { Ok(()) } else { Err(Incompatibility { violations }) }
}

/// Why a reader cannot read a writer: one or more [`Violation`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Incompatibility {
    /// Every violation found, in schema order.
    pub violations: Vec<Violation>,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// One broken rule at one place in the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where: the root type's name followed by field names, `[]` for array items and
    /// `{}` for map values, e.g. `shop.orders.OrderPlaced.lines[].quantity`.
    pub path: String,
    /// True when `path` names a record field (it says `field` rather than `type`).
    pub in_field: bool,
    /// The rule broken.
    pub rule: Rule,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.in_field { "field" } else { "type" };
        write!(f, "{what} `{}`: {}", self.path, self.rule)
    }
}

/// The resolution rule a [`Violation`] breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The types differ and no promotion applies.
    TypeMismatch {
        /// The reader's type.
        reader: String,
        /// The writer's type.
        writer: String,
    },
    /// Named types whose names do not match (and no reader alias names the writer).
    NameMismatch {
        /// The reader's full name.
        reader: String,
        /// The writer's full name.
        writer: String,
    },
    /// Fixed types of different sizes.
    FixedSize {
        /// The reader's size.
        reader: u64,
        /// The writer's size.
        writer: u64,
    },
    /// Writer enum symbols the reader lacks, and the reader enum has no default.
    MissingEnumSymbols {
        /// The symbols.
        symbols: Vec<String>,
    },
    /// A reader field without default that the writer does not have.
    MissingDefault {
        /// The reader field.
        field: String,
    },
    /// No branch of the reader union matches a writer type.
    MissingUnionBranch {
        /// The reader union.
        reader: String,
        /// The writer type (a branch of the writer union, or the writer schema).
        writer: String,
    },
    /// Different logical types on the same underlying type (`decimal` precision or scale,
    /// `timestamp-millis` vs `timestamp-micros`, ...): the data would be misread.
    LogicalType {
        /// The reader's logical type, e.g. `decimal(10,4)`.
        reader: String,
        /// The writer's logical type.
        writer: String,
        /// The underlying type both share, e.g. `long`.
        physical: String,
    },
}

impl Rule {
    /// A stable, machine-readable name for the rule, e.g. `type-mismatch`.
    pub fn code(&self) -> &'static str {
        match self {
            Rule::TypeMismatch { .. } => "type-mismatch",
            Rule::NameMismatch { .. } => "name-mismatch",
            Rule::FixedSize { .. } => "fixed-size",
            Rule::MissingEnumSymbols { .. } => "missing-enum-symbols",
            Rule::MissingDefault { .. } => "missing-default",
            Rule::MissingUnionBranch { .. } => "missing-union-branch",
            Rule::LogicalType { .. } => "logical-type",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::TypeMismatch { reader, writer } => {
                write!(f, "reader type {reader} cannot read writer type {writer}")
            }
            Rule::NameMismatch { reader, writer } => write!(
                f,
                "reader type `{reader}` does not match writer type `{writer}` by name or reader alias"
            ),
            Rule::FixedSize { reader, writer } => {
                write!(f, "reader fixed size {reader} differs from writer fixed size {writer}")
            }
            Rule::MissingEnumSymbols { symbols } => write!(
                f,
                "writer enum symbols {} are not in the reader enum, which has no default",
                symbols.join(", ")
            ),
            Rule::MissingDefault { field } => {
                write!(f, "reader field `{field}` is not in the writer and has no default")
            }
            Rule::MissingUnionBranch { reader, writer } => {
                write!(f, "no branch of reader union {reader} matches writer type {writer}")
            }
            Rule::LogicalType { reader, writer, physical } => write!(
                f,
                "reader logical type {reader} cannot read writer logical type {writer}: the {physical} would be read with another meaning"
            ),
        }
    }
}

/// A place in the reader schema.
#[derive(Clone)]
struct At {
    path: String,
    in_field: bool,
}

impl At {
    fn root(graph: &Graph) -> At {
        let path = match &graph.root {
            Node::Named(name) => name.clone(),
            other => graph.describe(other),
        };
        At { path, in_field: false }
    }
    fn field(&self, name: &str) -> At {
        At { path: format!("{}.{name}", self.path), in_field: true }
    }
    fn suffixed(&self, suffix: &str) -> At {
        At { path: format!("{}{suffix}", self.path), in_field: self.in_field }
    }
    fn violation(&self, rule: Rule) -> Vec<Violation> {
        vec![Violation { path: self.path.clone(), in_field: self.in_field, rule }]
    }
}

struct Checker<'a> {
    reader: &'a Graph,
    writer: &'a Graph,
    /// Record pairs being checked further up the stack: assumed compatible.
    in_progress: HashSet<(String, String)>,
    /// Record pairs already proven compatible.
    compatible: HashSet<(String, String)>,
}

impl Checker<'_> {
    fn check(&mut self, r: &Node, w: &Node, at: &At) -> Vec<Violation> {
        use Node::*;
        // Logical types only wrap primitives: unions and named types are never wrapped.
        match (r.physical(), w.physical()) {
            (Union(branches), Union(written)) => {
                written.iter().flat_map(|w| self.union_branch(r, branches, w, at)).collect()
            }
            (Union(branches), _) => self.union_branch(r, branches, w, at),
            (_, Union(written)) => written.iter().flat_map(|w| self.check(r, w, at)).collect(),
            (Array(r), Array(w)) => self.check(r, w, &at.suffixed("[]")),
            (Map(r), Map(w)) => self.check(r, w, &at.suffixed("{}")),
            (Named(r), Named(w)) => self.named(r, w, at),
            (rp, wp) if promotes(rp, wp) => match (r, w) {
                (Logical(rl, _), Logical(wl, _)) if rp == wp && rl != wl => at.violation(Rule::LogicalType {
                    reader: rl.to_string(),
                    writer: wl.to_string(),
                    physical: self.reader.describe(rp),
                }),
                _ => Vec::new(),
            },
            _ => at.violation(self.mismatch(r, w)),
        }
    }

    /// A non-union writer `w` against the reader union `union`: the first matching branch
    /// must read it.
    fn union_branch(&mut self, union: &Node, branches: &[Node], w: &Node, at: &At) -> Vec<Violation> {
        match branches.iter().find(|r| self.matches(r, w)) {
            Some(r) => self.check(r, w, at),
            None => at.violation(Rule::MissingUnionBranch {
                reader: self.reader.describe(union),
                writer: self.writer.describe(w),
            }),
        }
    }

    /// The spec's shallow match, used to pick a reader union branch.
    fn matches(&self, r: &Node, w: &Node) -> bool {
        match (r.physical(), w.physical()) {
            (Node::Array(_), Node::Array(_)) | (Node::Map(_), Node::Map(_)) => true,
            (Node::Named(r), Node::Named(w)) => match (self.reader.get(r), self.writer.get(w)) {
                (Some(r), Some(w)) => match (&r.kind, &w.kind) {
                    (Kind::Fixed { size: rs, .. }, Kind::Fixed { size: ws, .. }) => rs == ws && names_match(r, w),
                    (Kind::Record { .. }, Kind::Record { .. }) | (Kind::Enum { .. }, Kind::Enum { .. }) => {
                        names_match(r, w)
                    }
                    _ => false,
                },
                _ => false,
            },
            (r, w) => promotes(r, w),
        }
    }

    fn named(&mut self, r_name: &str, w_name: &str, at: &At) -> Vec<Violation> {
        let (Some(r), Some(w)) = (self.reader.get(r_name), self.writer.get(w_name)) else {
            return at.violation(Rule::TypeMismatch { reader: r_name.to_owned(), writer: w_name.to_owned() });
        };
        let mut out = Vec::new();
        if std::mem::discriminant(&r.kind) != std::mem::discriminant(&w.kind) {
            return at.violation(self.mismatch(&Node::Named(r_name.into()), &Node::Named(w_name.into())));
        }
        if !names_match(r, w) {
            out.extend(at.violation(Rule::NameMismatch {
                reader: r.full_name.clone(),
                writer: w.full_name.clone(),
            }));
        }
        match (&r.kind, &w.kind) {
            (Kind::Fixed { size: rs, .. }, Kind::Fixed { size: ws, .. }) if rs != ws => {
                out.extend(at.violation(Rule::FixedSize { reader: *rs, writer: *ws }));
            }
            (Kind::Fixed { logical: Some(rl), .. }, Kind::Fixed { logical: Some(wl), .. }) if rl != wl => {
                out.extend(at.violation(Rule::LogicalType {
                    reader: rl.to_string(),
                    writer: wl.to_string(),
                    physical: format!("fixed {}", r.full_name),
                }));
            }
            (Kind::Enum { symbols: rs, default }, Kind::Enum { symbols: ws, .. }) if default.is_none() => {
                let missing: Vec<String> = ws.iter().filter(|s| !rs.contains(s)).cloned().collect();
                if !missing.is_empty() {
                    out.extend(at.violation(Rule::MissingEnumSymbols { symbols: missing }));
                }
            }
            (Kind::Record { fields: rf }, Kind::Record { fields: wf }) => {
                let key = (r_name.to_owned(), w_name.to_owned());
                if self.in_progress.contains(&key) || self.compatible.contains(&key) {
                    return out;
                }
                self.in_progress.insert(key.clone());
                let fields = self.fields(rf, wf, at);
                self.in_progress.remove(&key);
                if fields.is_empty() && out.is_empty() {
                    self.compatible.insert(key);
                }
                out.extend(fields);
            }
            _ => {}
        }
        out
    }

    fn fields(&mut self, reader: &[crate::graph::Field], writer: &[crate::graph::Field], at: &At) -> Vec<Violation> {
        let mut out = Vec::new();
        for field in reader {
            let written = writer
                .iter()
                .find(|w| w.name == field.name)
                .or_else(|| field.aliases.iter().find_map(|alias| writer.iter().find(|w| &w.name == alias)));
            match written {
                Some(w) => out.extend(self.check(&field.ty, &w.ty, &at.field(&field.name))),
                None if field.default.is_some() => {}
                None => out.extend(at.field(&field.name).violation(Rule::MissingDefault { field: field.name.clone() })),
            }
        }
        out
    }

    fn mismatch(&self, r: &Node, w: &Node) -> Rule {
        Rule::TypeMismatch { reader: self.reader.describe(r), writer: self.writer.describe(w) }
    }
}

/// Same name (unqualified, as the spec says), or a reader alias naming the writer.
fn names_match(reader: &Named, writer: &Named) -> bool {
    reader.short_name() == writer.short_name() || reader.aliases.contains(&writer.full_name)
}

/// Equal primitives, or a primitive promotion the spec allows.
fn promotes(r: &Node, w: &Node) -> bool {
    use Node::*;
    matches!(
        (r, w),
        (Null, Null)
            | (Boolean, Boolean)
            | (Int, Int)
            | (Long, Long | Int)
            | (Float, Float | Long | Int)
            | (Double, Double | Float | Long | Int)
            | (Bytes, Bytes | String)
            | (String, String | Bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avsc(json: &str) -> Avsc {
        Avsc::parse(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_narrowed_field_names_its_path_and_rule() {
        let old = avsc(include_str!("../../../schemas/shop/orders/OrderPlaced/v1.avsc"));
        let text = include_str!("../../../schemas/shop/orders/OrderPlaced/v1.avsc")
            .replace(r#""total_cents", "type": "long""#, r#""total_cents", "type": "int""#);
        let new = avsc(&text);
        let err = can_read(&new, &old).expect_err("int cannot read long");
        assert_eq!(
            err.to_string(),
            "field `shop.orders.OrderPlaced.total_cents`: reader type int cannot read writer type long"
        );
        assert_eq!(err.violations[0].rule.code(), "type-mismatch");
    }

    #[test]
    fn nested_paths_go_through_arrays() {
        let w = avsc(r#"{"type":"record","name":"R","fields":[{"name":"xs","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"q","type":"long"}]}}}]}"#);
        let r = avsc(r#"{"type":"record","name":"R","fields":[{"name":"xs","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"q","type":"int"}]}}}]}"#);
        let err = can_read(&r, &w).expect_err("narrowed");
        assert_eq!(err.violations[0].path, "R.xs[].q");
    }

    #[test]
    fn every_violation_is_listed() {
        let w = avsc(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#);
        let r = avsc(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}"#);
        let err = can_read(&r, &w).expect_err("two problems");
        let codes: Vec<_> = err.violations.iter().map(|v| v.rule.code()).collect();
        assert_eq!(codes, ["type-mismatch", "missing-default"]);
    }

    /// A record `T` with one field `f` of type `ty` (JSON).
    fn one_field(ty: &str) -> Avsc {
        avsc(&format!(r#"{{"type":"record","name":"T","namespace":"x","fields":[{{"name":"f","type":{ty}}}]}}"#))
    }

    #[test]
    fn a_changed_decimal_scale_or_precision_is_incompatible_both_ways() {
        let v1 = one_field(r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#);
        for changed in [
            r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":4}"#,
            r#"{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}"#,
        ] {
            let v2 = one_field(changed);
            for (reader, writer) in [(&v2, &v1), (&v1, &v2)] {
                let err = can_read(reader, writer).expect_err("a decimal must keep precision and scale");
                assert_eq!(err.violations[0].rule.code(), "logical-type", "{err}");
                assert_eq!(err.violations[0].path, "x.T.f");
            }
        }
        let err = can_read(&one_field(r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":4}"#), &v1)
            .expect_err("scale changed");
        assert_eq!(
            err.to_string(),
            "field `x.T.f`: reader logical type decimal(10,4) cannot read writer logical type decimal(10,2): \
             the bytes would be read with another meaning"
        );
        // The same decimal on a fixed, too.
        let fixed = |scale: u32| {
            one_field(&format!(
                r#"{{"type":"fixed","name":"D","size":8,"logicalType":"decimal","precision":10,"scale":{scale}}}"#
            ))
        };
        assert!(can_read(&fixed(2), &fixed(2)).is_ok());
        let err = can_read(&fixed(4), &fixed(2)).expect_err("fixed decimal scale changed");
        assert_eq!(err.violations[0].rule.code(), "logical-type", "{err}");
    }

    #[test]
    fn a_changed_logical_type_on_the_same_physical_type_is_incompatible_both_ways() {
        let pairs = [
            ("long", "timestamp-millis", "timestamp-micros"),
            ("long", "timestamp-micros", "timestamp-nanos"),
            ("long", "timestamp-millis", "local-timestamp-millis"),
            ("long", "local-timestamp-micros", "local-timestamp-nanos"),
            ("long", "time-micros", "timestamp-micros"),
            ("int", "date", "time-millis"),
        ];
        for (physical, a, b) in pairs {
            let a = one_field(&format!(r#"{{"type":"{physical}","logicalType":"{a}"}}"#));
            let b = one_field(&format!(r#"{{"type":"{physical}","logicalType":"{b}"}}"#));
            assert!(can_read(&a, &a).is_ok());
            for (reader, writer) in [(&a, &b), (&b, &a)] {
                let err = can_read(reader, writer).expect_err("logical type changed");
                assert_eq!(err.violations[0].rule.code(), "logical-type", "{err}");
            }
        }
        // Inside a union branch and an array too.
        let a = one_field(r#"["null",{"type":"array","items":{"type":"long","logicalType":"timestamp-millis"}}]"#);
        let b = one_field(r#"["null",{"type":"array","items":{"type":"long","logicalType":"timestamp-micros"}}]"#);
        let err = can_read(&b, &a).expect_err("items changed unit");
        assert_eq!(err.to_string(), "field `x.T.f[]`: reader logical type timestamp-micros cannot read writer logical type timestamp-millis: the long would be read with another meaning");
        // A logical type added to or dropped from a plain type still resolves (the
        // spec: a reader may ignore logical types), as does one on another physical type
        // (Java agrees; see the corpus).
        assert!(can_read(&one_field(r#"{"type":"string","logicalType":"uuid"}"#), &one_field(r#""string""#)).is_ok());
        assert!(can_read(&one_field(r#""long""#), &one_field(r#"{"type":"long","logicalType":"timestamp-millis"}"#)).is_ok());
        let date = one_field(r#"{"type":"int","logicalType":"date"}"#);
        assert!(can_read(&one_field(r#"{"type":"long","logicalType":"timestamp-millis"}"#), &date).is_ok());
    }

    #[test]
    fn mutually_recursive_records_terminate() {
        let s = r#"{"type":"record","name":"A","fields":[{"name":"b","type":["null",{"type":"record","name":"B","fields":[{"name":"a","type":["null","A"]}]}]}]}"#;
        assert!(can_read(&avsc(s), &avsc(s)).is_ok());
    }
}
