//! One parsed Avro schema (the content of an `.avsc` file).

use std::fmt;
use std::path::{Path, PathBuf};

use herald_bus::schema::Fingerprint;
use herald_bus::schema::canonical::parsing_canonical_form;

use crate::graph::Graph;

/// A parsed, validated Avro schema: what every other module of this crate works on.
///
/// Parsing checks the JSON (errors carry line and column), then Avro validity with
/// `apache_avro` (the library Herald encodes and decodes with).
///
/// ```
/// use herald_schema::Avsc;
/// let avsc = Avsc::parse(r#"{"type":"record","name":"Ping","namespace":"demo","fields":[]}"#)?;
/// assert_eq!(avsc.full_name(), Some("demo.Ping"));
/// assert_eq!(avsc.fingerprint().to_string().len(), 16);
/// # Ok::<(), herald_schema::ParseError>(())
/// ```
#[derive(Clone)]
pub struct Avsc {
    schema: apache_avro::Schema,
    json: serde_json::Value,
    pub(crate) graph: Graph,
    canonical_form: String,
    fingerprint: Fingerprint,
    origin: Option<PathBuf>,
}

impl Avsc {
    /// Parses schema text.
    pub fn parse(text: &str) -> Result<Avsc, ParseError> {
        Self::parse_from(text, None)
    }

    /// Reads and parses an `.avsc` file; errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Avsc, ParseError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ParseError::Read { path: path.to_path_buf(), source })?;
        Self::parse_from(&text, Some(path))
    }

    fn parse_from(text: &str, origin: Option<&Path>) -> Result<Avsc, ParseError> {
        let origin = origin.map(Path::to_path_buf);
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| ParseError::Json {
            origin: origin.clone(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e),
        })?;
        let invalid = |message: String| ParseError::Avro { origin: origin.clone(), message };
        let schema = apache_avro::Schema::parse(&json).map_err(|e| invalid(e.to_string()))?;
        let graph = Graph::from_json(&json).map_err(invalid)?;
        // From the JSON as written, per the spec (apache-avro's own form keeps logical
        // types, AVRO-4004, and its model rewrites a few schemas).
        let canonical_form = parsing_canonical_form(&json).map_err(|e| invalid(e.to_string()))?;
        let fingerprint = Fingerprint::of_canonical_form(&canonical_form);
        Ok(Avsc { canonical_form, fingerprint, schema, json, graph, origin })
    }

    /// The schema as `apache_avro` sees it, for encoding and decoding.
    pub fn schema(&self) -> &apache_avro::Schema {
        &self.schema
    }

    /// The schema's JSON, as written.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    /// The full name (`namespace.Name`) of a record, enum or fixed; `None` for other types.
    pub fn full_name(&self) -> Option<&str> {
        match &self.graph.root {
            crate::graph::Node::Named(name) => Some(name),
            _ => None,
        }
    }

    /// The CRC-64-AVRO fingerprint of the parsing canonical form; it displays as the
    /// lower-case hex of the 8 bytes in single-object-encoding (little-endian) order.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The specification's parsing canonical form (what the fingerprint is computed
    /// over), as Java's `SchemaNormalization.toParsingForm` and fastavro write it.
    pub fn canonical_form(&self) -> &str {
        &self.canonical_form
    }

    /// The file this schema was loaded from, if any.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// A short label for messages: the file name, or the full name, or `schema`.
    pub fn label(&self) -> String {
        match (&self.origin, self.full_name()) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => "schema".to_owned(),
        }
    }
}

impl fmt::Debug for Avsc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Avsc")
            .field("name", &self.full_name())
            .field("fingerprint", &self.fingerprint)
            .field("origin", &self.origin)
            .finish()
    }
}

/// A schema that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not JSON.
    #[error("{}:{line}:{column}: invalid JSON: {message}", label(origin))]
    Json {
        /// The file, when the text came from one.
        origin: Option<PathBuf>,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The JSON is not a valid Avro schema.
    #[error("{}: invalid Avro schema: {message}", label(origin))]
    Avro {
        /// The file, when the text came from one.
        origin: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
}

impl ParseError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ParseError::Read { path, .. } => Some(path),
            ParseError::Json { origin, .. } | ParseError::Avro { origin, .. } => origin.as_deref(),
        }
    }
}

fn label(origin: &Option<PathBuf>) -> String {
    origin.as_ref().map_or_else(|| "<schema>".to_owned(), |p| p.display().to_string())
}

/// serde_json's message without its " at line L column C" suffix (we print the position
/// ourselves, as `file:line:column`).
pub(crate) fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).map_or(text.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_carry_line_and_column() {
        let err = Avsc::parse("{\n  \"type\": \"record\",\n  \"name\" \"X\"\n}").expect_err("bad json");
        let ParseError::Json { line, column, .. } = &err else { panic!("{err}") };
        assert_eq!((*line, *column), (3, 10));
        assert!(err.to_string().starts_with("<schema>:3:10: invalid JSON: expected `:`"), "{err}");
    }

    /// A record `shop.Note` with one field `note`: `{"name":"note", <field>}`.
    fn note(field: &str) -> Result<Avsc, ParseError> {
        Avsc::parse(&format!(r#"{{"type":"record","name":"Note","namespace":"shop","fields":[{{"name":"note",{field}}}]}}"#))
    }

    #[test]
    fn a_union_default_must_match_the_first_branch() {
        let err = note(r#""type":["string","null"],"default":null"#).expect_err("null is not the first branch");
        assert!(matches!(err, ParseError::Avro { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "<schema>: invalid Avro schema: field `shop.Note.note`: invalid default null: \
             a union's default must match its first branch, string: expected string, got null"
        );
        let err = note(r#""type":["null","string"],"default":"x""#).expect_err("\"x\" is not the first branch");
        assert!(err.to_string().contains("field `shop.Note.note`: invalid default \"x\": a union's default must match its first branch, null"), "{err}");
        assert!(note(r#""type":["null","string"],"default":null"#).is_ok());
        assert!(note(r#""type":["string","null"],"default":"x""#).is_ok());
    }

    #[test]
    fn a_default_must_match_its_type() {
        // What apache_avro lets through is explained here; what it refuses keeps its message.
        for (field, why) in [
            (r#""type":"int","default":3000000000"#, "expected int, got 3000000000"),
            (r#""type":{"type":"fixed","name":"F","size":2},"default":"abc""#, "expected fixed shop.F of 2 bytes, got \"abc\""),
            (
                r#""type":{"type":"array","items":["string","null"]},"default":["a",null]"#,
                "[1]: a union's default must match its first branch, string: expected string, got null",
            ),
            (
                r#""type":{"type":"record","name":"In","fields":[{"name":"q","type":["null","int"]}]},"default":{"q":1}"#,
                "field `q`: a union's default must match its first branch, null: expected null, got 1",
            ),
        ] {
            let err = note(field).expect_err(field).to_string();
            assert!(err.contains("field `shop.Note.note`: invalid default"), "{field}: {err}");
            assert!(err.ends_with(why), "{field}: expected {why:?} in: {err}");
        }
        for field in [
            r#""type":"int","default":"7""#,
            r#""type":"long","default":1.5"#,
            r#""type":"string","default":null"#,
            r#""type":"boolean","default":0"#,
            r#""type":{"type":"enum","name":"E","symbols":["A"]},"default":"B""#,
            r#""type":{"type":"array","items":"int"},"default":[1,"2"]"#,
            r#""type":{"type":"map","values":"long"},"default":{"k":"v"}"#,
            r#""type":{"type":"record","name":"In","fields":[{"name":"q","type":"int"}]},"default":{}"#,
        ] {
            let err = note(field).expect_err(field);
            assert!(matches!(err, ParseError::Avro { .. }) && err.to_string().contains("note"), "{field}: {err}");
        }
        for field in [
            r#""type":"long","default":7"#,
            r#""type":"double","default":7"#,
            r#""type":{"type":"long","logicalType":"timestamp-millis"},"default":0"#,
            r#""type":{"type":"record","name":"In","fields":[{"name":"q","type":"int","default":1}]},"default":{}"#,
            r#""type":{"type":"array","items":["null","int"]},"default":[null,null]"#,
            r#""type":{"type":"map","values":["string","null"]},"default":{"k":"v"}"#,
        ] {
            assert!(note(field).is_ok(), "{field}");
        }
    }

    #[test]
    fn invalid_avro_is_reported() {
        let err = Avsc::parse(r#"{"type":"record","name":"X"}"#).expect_err("no fields");
        assert!(matches!(err, ParseError::Avro { .. }), "{err}");
    }
}
