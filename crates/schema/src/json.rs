//! JSON ⇄ Avro values, guided by the schema.
//!
//! # JSON to Avro ([`to_avro`])
//! Accepts [Avro's JSON encoding] and the plain JSON people write by hand:
//! - **Unions**: `null`, or an object with one key naming the branch (`{"string": "x"}`,
//!   `{"shop.orders.OrderLine": {...}}`, `{"long": 5}`), or a plain value when exactly one
//!   branch fits it (`"x"` for `["null", "string"]`). A plain value that fits several
//!   branches (`5` for `["int", "long"]`) is refused as ambiguous. Branch names are the
//!   primitive names, `array`, `map`, or the full name of a named type; a logical type is
//!   named by its underlying type (`long` for `timestamp-millis`).
//! - **bytes and fixed**: strings whose characters are the bytes (ISO-8859-1, `\u00ff` for
//!   `0xFF`), as the Avro specification says; a fixed must have exactly its size.
//! - **Numbers**: `int` must be an integer that fits 32 bits, `long` 64 bits; `float` and
//!   `double` take any number, plus the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
//! - **Records**: every field must be given unless the schema has a default for it (the
//!   default is used); a key that is not a field (nor an alias of one) is an error.
//! - **Enums** by symbol, **arrays**, **maps**, nested records, named references.
//! - **Logical types** as their underlying type: `date` and `time-millis` as int, the
//!   timestamps and `time-micros` as long, `uuid` as its string, `decimal` as bytes or
//!   fixed (the two's-complement unscaled value), `duration` as its 12-byte fixed;
//!   `big-decimal` as a decimal string such as `"12.50"` (or a JSON number).
//!
//! Text is read with [`parse`], which refuses an object that gives a key twice.
//!
//! A value that does not fit is an [`Error`] naming where, as a [`Path`] such as
//! `lines[0].quantity` (see [`path`] for the format).
//!
//! # Avro to JSON ([`to_json`], [`AvroJson`])
//! The natural mapping, and the inverse of the above wherever it can be: records as
//! objects (fields in schema order with [`AvroJson`]), unions as the plain branch value,
//! enums as their symbol, bytes and fixed as ISO-8859-1 strings (so the output can be
//! published again), logical types as their underlying type, big decimals as strings,
//! non-finite floats as `"NaN"`, `"Infinity"`, `"-Infinity"`.
//!
//! [Avro's JSON encoding]: https://avro.apache.org/docs/1.12.0/specification/#json-encoding

mod from_avro;
pub mod path;
mod strict;
mod to_avro;

pub use from_avro::{to_json, AvroJson};
pub use path::{Path, Segment};
pub use strict::parse;
pub use to_avro::{encode, to_avro, JsonEncoder};

use std::fmt;

/// A JSON value that does not fit the schema, and where.
///
/// Displays as `field lines[0].quantity: expected int, got string "two"`, or without the
/// `field` part when the event itself is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Error {
    /// Where the problem is.
    pub path: Path,
    /// What is wrong there.
    pub problem: Problem,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "field {}: {}", self.path, self.problem)
        }
    }
}

/// What is wrong with a JSON value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The value has the wrong JSON type for the schema.
    #[error("expected {expected}, got {got}")]
    Mismatch {
        /// The Avro type, for example `long` or `record shop.orders.OrderLine`.
        expected: String,
        /// The JSON value, described briefly.
        got: String,
    },
    /// A number does not fit the Avro type (`int` is 32 bits).
    #[error("number {got} is out of range for {expected}")]
    OutOfRange {
        /// The Avro type.
        expected: &'static str,
        /// The number as written.
        got: String,
    },
    /// An integer written as a float (with an exponent or a fraction) beyond ±2^53, where a
    /// float cannot hold every integer: which one was meant is not known.
    #[error("number {got} is written as a float beyond ±2^53, where it cannot be exact: write the {expected} as an integer (digits only)")]
    Inexact {
        /// The Avro type.
        expected: &'static str,
        /// The number as written.
        got: String,
    },
    /// A required record field is missing.
    #[error("missing, and the schema has no default for it")]
    Missing,
    /// A key of a record object that is not a field of the record.
    #[error("not a field of {record} (fields: {})", fields.join(", "))]
    UnknownField {
        /// The record's full name.
        record: String,
        /// Its fields.
        fields: Vec<String>,
    },
    /// A string that is not a symbol of the enum.
    #[error("{got:?} is not a symbol of {name} (symbols: {})", symbols.join(", "))]
    UnknownSymbol {
        /// The enum's full name.
        name: String,
        /// The string given.
        got: String,
        /// The enum's symbols.
        symbols: Vec<String>,
    },
    /// A string used as bytes has a character above U+00FF.
    #[error("bytes must be given as an ISO-8859-1 string (one character per byte, up to \\u00ff), found {found:?}")]
    NotLatin1 {
        /// The offending character.
        found: char,
    },
    /// A fixed value of the wrong length.
    #[error("expected {expected} bytes for {name}, got {got}")]
    FixedSize {
        /// The fixed type's name.
        name: String,
        /// Its size.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// No branch of a union fits the value.
    #[error("no branch of union [{}] fits {got}", branches.join(", "))]
    NoBranch {
        /// The union's branches.
        branches: Vec<String>,
        /// The JSON value, described briefly.
        got: String,
    },
    /// Several branches of a union fit a plain value.
    #[error("{got} fits several branches of union [{}]; name one, for example {{\"{}\": ...}}", fitting.join(", "), fitting.first().map(String::as_str).unwrap_or(""))]
    Ambiguous {
        /// The branches that fit.
        fitting: Vec<String>,
        /// The JSON value, described briefly.
        got: String,
    },
    /// A string that should be a UUID or a decimal is not one.
    #[error("invalid {expected}: {reason}")]
    Invalid {
        /// What was expected (`uuid`, `big-decimal`).
        expected: &'static str,
        /// Why it is not.
        reason: String,
    },
    /// The schema refers to a named type it does not define.
    #[error("the schema refers to unknown type {0}")]
    UnknownReference(String),
    /// The Avro encoder refused the mapped value (a bug in the mapping if it happens).
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Describes a JSON value briefly for error messages: `string "abc"`, `number 1.5`,
/// `object`, `array of 3`.
pub(crate) fn describe(json: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match json {
        J::Null => "null".to_owned(),
        J::Bool(b) => format!("boolean {b}"),
        J::Number(n) => format!("number {n}"),
        J::String(s) if s.chars().count() > 40 => {
            let head: String = s.chars().take(40).collect();
            format!("string {:?}", format!("{head}…"))
        }
        J::String(s) => format!("string {s:?}"),
        J::Array(a) => format!("array of {}", a.len()),
        J::Object(_) => "object".to_owned(),
    }
}
