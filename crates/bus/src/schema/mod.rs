//! The schema set: every Avro schema a process knows, indexed by fingerprint and full name.
//!
//! The `.avsc` files under `schemas/` are the single source of truth for events. A
//! [`SchemaSet`] holds parsed schemas and answers the two questions the codec asks:
//! "which writer schema has this fingerprint?" (decoding) and "what is the fingerprint of
//! this schema?" (encoding).
//!
//! - [`canonical`]: the specification's Parsing Canonical Form, from a schema's JSON.
//! - [`Fingerprint`]: its CRC-64-AVRO, the 8 bytes after `C3 01` in single-object encoding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apache_avro::Schema;

pub mod canonical;
mod fingerprint;
pub mod logical;
mod names;
pub(crate) mod unions;

pub use canonical::CanonicalError;
pub use fingerprint::Fingerprint;

/// One schema known to the set, with its full name and fingerprint.
pub struct KnownSchema {
    /// Avro full name (`namespace.Name`); for events this is also the CloudEvents `type`.
    pub name: String,
    /// Fingerprint of the parsing canonical form.
    pub fingerprint: Fingerprint,
    /// The parsed schema.
    pub schema: Schema,
    /// File it was loaded from, if any.
    pub origin: Option<PathBuf>,
    /// The JSON text it was parsed from, when it was (see [`KnownSchema::json`]).
    text: Option<Box<str>>,
    /// The schema with its named types resolved, built on first decode and kept:
    /// apache-avro's `from_avro_datum` resolves the writer schema again for every datum.
    datum_reader: std::sync::OnceLock<Result<apache_avro::GenericSingleObjectReader, String>>,
    /// The same schema for serde_avro_fast, which decodes about six times faster; `None`
    /// when it refuses the schema or disagrees on the fingerprint.
    fast: Option<serde_avro_fast::Schema>,
    /// [`KnownSchema::reads_as`]'s verdict, for the schema it was asked about last.
    reads_as: std::sync::Mutex<Option<Verdict>>,
    /// [`KnownSchema::resolves_to`]'s verdict, likewise.
    resolves_to: std::sync::Mutex<Option<Verdict>>,
}

/// A verdict on reading this schema's data as another schema's, and the schema it is about.
type Verdict = (std::sync::Weak<KnownSchema>, Result<(), String>);

/// The verdict kept in `slot` if it is about `ours`, else `judge`'s, kept.
fn verdict_about(slot: &std::sync::Mutex<Option<Verdict>>, ours: &Arc<KnownSchema>, judge: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let mut last = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((of, verdict)) = &*last
        && std::ptr::eq(of.as_ptr(), Arc::as_ptr(ours))
    {
        return verdict.clone();
    }
    let verdict = judge();
    *last = Some((Arc::downgrade(ours), verdict.clone()));
    verdict
}

impl std::fmt::Debug for KnownSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownSchema").field("name", &self.name).field("fingerprint", &self.fingerprint).field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// A header builder for a bare datum: nothing precedes it.
struct NoHeader;

impl apache_avro::headers::HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

impl KnownSchema {
    /// The schema's JSON as it was written (the `.avsc` file's text, or the string given
    /// to [`SchemaSet::add_str`]), for a schema registry: docs on fields kept, which
    /// apache-avro's model of the schema drops, and byte for byte what other clients
    /// (confluent-kafka's serializers, Java's) register from the same file, so a registry
    /// that compares texts finds their registration. A schema added already parsed
    /// ([`SchemaSet::add`]) has no text: its JSON is apache-avro's.
    ///
    /// ```
    /// use herald_bus::schema::SchemaSet;
    /// let text = r#"{"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "int", "doc": "how many"}]}"#;
    /// let known = SchemaSet::default().add_str(text).unwrap();
    /// assert_eq!(known.json().unwrap(), text);
    /// ```
    pub fn json(&self) -> Result<std::borrow::Cow<'_, str>, serde_json::Error> {
        match &self.text {
            Some(text) => Ok(std::borrow::Cow::Borrowed(text)),
            None => serde_json::to_string(&self.schema).map(std::borrow::Cow::Owned),
        }
    }

    /// The schema for serde_avro_fast's decoder, if it reads it the same way.
    pub(crate) fn fast(&self) -> Option<&serde_avro_fast::Schema> {
        self.fast.as_ref()
    }

    /// Whether a datum of this schema can be decoded straight as `ours`, a schema with the
    /// same fingerprint (ours, or ours fetched from elsewhere): `Err` with the place where
    /// a logical type would change what a value means ([`logical::misread_straight`]). Kept for the
    /// last schema asked about, so a consumer pays the walk once per writer, not per record.
    pub(crate) fn reads_as(&self, ours: &Arc<KnownSchema>) -> Result<(), String> {
        verdict_about(&self.reads_as, ours, || match logical::misread_straight(&self.schema, &ours.schema) {
            Some(place) => Err(format!("the writer's schema has the fingerprint of {}'s but a logical type that changes what a value means: {place}", ours.name)),
            None => Ok(()),
        })
    }

    /// Whether a datum of this schema, another version than `ours`, can be resolved to
    /// `ours` without a logical type changing what a value means ([`logical::misread`]).
    /// Kept for the last schema asked about, as [`KnownSchema::reads_as`] is.
    pub(crate) fn resolves_to(&self, ours: &Arc<KnownSchema>) -> Result<(), String> {
        verdict_about(&self.resolves_to, ours, || logical::resolvable(&self.schema, &ours.schema))
    }

    /// Reads one datum written with this schema from `input` (no resolution).
    pub(crate) fn read_datum<R: std::io::Read>(&self, input: &mut R) -> Result<apache_avro::types::Value, String> {
        let reader = self.datum_reader.get_or_init(|| {
            apache_avro::GenericSingleObjectReader::new_with_header_builder(self.schema.clone(), NoHeader).map_err(|e| e.to_string())
        });
        match reader {
            Ok(reader) => reader.read_value(input).map_err(|e| e.to_string()),
            Err(e) => Err(format!("schema {} cannot be resolved: {e}", self.name)),
        }
    }
}

/// Failure to load or parse schemas.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A schema file could not be read.
    #[error("cannot read schema file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A schema is not valid Avro.
    #[error("invalid Avro schema{}: {source}", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when the schema came from one.
        origin: Option<PathBuf>,
        /// The parser's error.
        source: Box<apache_avro::Error>,
    },
    /// The parsing canonical form (and so the fingerprint) cannot be written.
    #[error("invalid Avro schema{}: {source}", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Canonical {
        /// The file, when the schema came from one.
        origin: Option<PathBuf>,
        /// What is wrong.
        source: CanonicalError,
    },
    /// A top-level schema has no name (only named records, enums and fixed can be events).
    #[error("schema{} is not a named type", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Unnamed {
        /// The file, when the schema came from one.
        origin: Option<PathBuf>,
    },
}

/// A set of Avro schemas, indexed by fingerprint and by full name.
///
/// Several versions of one type may be present: [`SchemaSet::by_fingerprint`] finds each
/// exactly; [`SchemaSet::latest`] returns the one added last for a name (files are loaded
/// in path order, so `v2.avsc` wins over `v1.avsc`).
///
/// ```
/// use herald_bus::schema::SchemaSet;
/// let mut set = SchemaSet::default();
/// set.add_str(r#"{"type":"record","name":"Ping","namespace":"demo","fields":[]}"#).unwrap();
/// assert!(set.latest("demo.Ping").is_some());
/// ```
#[derive(Debug, Default, Clone)]
pub struct SchemaSet {
    by_fingerprint: HashMap<Fingerprint, Arc<KnownSchema>>,
    latest: HashMap<String, Arc<KnownSchema>>,
}

impl SchemaSet {
    /// Parses one schema from JSON text and adds it.
    pub fn add_str(&mut self, json: &str) -> Result<Arc<KnownSchema>, SchemaError> {
        self.add_text(json, None)
    }

    /// Parses a writer schema as a schema registry holds it and adds it: any Avro schema,
    /// not only a named one. Confluent's serializers register a value's schema as it is,
    /// so a topic may carry a `"string"`, or a union of records (one schema for several
    /// event types). An unnamed schema is known by a description of it as its
    /// [`name`](KnownSchema::name) (`string`, `union [demo.A, demo.B]`, `array`, `map`),
    /// which no event type equals: readers show its values, and an event family takes none
    /// of them (an unknown type, see the consumer's `UnknownTypes`).
    ///
    /// ```
    /// use herald_bus::schema::SchemaSet;
    /// let mut set = SchemaSet::default();
    /// assert!(set.add_str(r#""string""#).is_err(), "an event's schema is named");
    /// let union = r#"[{"type":"record","name":"A","namespace":"demo","fields":[]},{"type":"record","name":"B","namespace":"demo","fields":[]}]"#;
    /// assert_eq!(set.add_writer_str(union).unwrap().name, "union [demo.A, demo.B]");
    /// assert_eq!(set.add_writer_str(r#""string""#).unwrap().name, "string");
    /// ```
    pub fn add_writer_str(&mut self, json: &str) -> Result<Arc<KnownSchema>, SchemaError> {
        let (schema, fingerprint) = Self::parse_text(json, None)?;
        let name = schema.name().map(|n| n.fullname(None)).unwrap_or_else(|| describe(&schema));
        self.insert_named(name, schema, fingerprint, None, Some(json.into()))
    }

    /// Parses schema text (from `origin`, if a file) and adds it, fingerprinted from the
    /// text itself: exact even where apache-avro's model rewrites the schema.
    fn add_text(&mut self, text: &str, origin: Option<PathBuf>) -> Result<Arc<KnownSchema>, SchemaError> {
        let (schema, fingerprint) = Self::parse_text(text, origin.as_ref())?;
        self.insert(schema, fingerprint, origin, Some(text.into()))
    }

    fn parse_text(text: &str, origin: Option<&PathBuf>) -> Result<(Schema, Fingerprint), SchemaError> {
        let parse_error = |e: apache_avro::Error| SchemaError::Parse { origin: origin.cloned(), source: Box::new(e) };
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| parse_error(apache_avro::error::Details::ParseSchemaJson(e).into()))?;
        let schema = Schema::parse(&json).map_err(parse_error)?;
        let fingerprint = Fingerprint::of_json(&json).map_err(|source| SchemaError::Canonical { origin: origin.cloned(), source })?;
        Ok((schema, fingerprint))
    }

    /// Adds an already parsed schema, fingerprinted with [`Fingerprint::of`] (see there
    /// for the two schemas apache-avro rewrites; [`SchemaSet::add_str`] has no such gap).
    pub fn add(
        &mut self,
        schema: Schema,
        origin: Option<PathBuf>,
    ) -> Result<Arc<KnownSchema>, SchemaError> {
        let fingerprint = Fingerprint::of(&schema);
        self.insert(schema, fingerprint, origin, None)
    }

    fn insert(&mut self, schema: Schema, fingerprint: Fingerprint, origin: Option<PathBuf>, text: Option<Box<str>>) -> Result<Arc<KnownSchema>, SchemaError> {
        let name = schema
            .name()
            .map(|n| n.fullname(None))
            .ok_or_else(|| SchemaError::Unnamed { origin: origin.clone() })?;
        self.insert_named(name, schema, fingerprint, origin, text)
    }

    fn insert_named(&mut self, name: String, schema: Schema, fingerprint: Fingerprint, origin: Option<PathBuf>, text: Option<Box<str>>) -> Result<Arc<KnownSchema>, SchemaError> {
        // From the full JSON, not the canonical form, which drops logical types. Both
        // follow the spec's canonical form, so they agree unless serde_avro_fast reads
        // the schema differently; then the fast path stays off for it.
        let fast = serde_json::to_string(&schema)
            .ok()
            .and_then(|json| json.parse::<serde_avro_fast::Schema>().ok())
            .filter(|fast| fast.rabin_fingerprint() == &fingerprint.0);
        let known = Arc::new(KnownSchema {
            fingerprint,
            name: name.clone(),
            schema,
            origin,
            text,
            datum_reader: std::sync::OnceLock::new(),
            fast,
            reads_as: std::sync::Mutex::new(None),
            resolves_to: std::sync::Mutex::new(None),
        });
        self.by_fingerprint.insert(known.fingerprint, known.clone());
        self.latest.insert(name, known.clone());
        Ok(known)
    }

    /// Loads every `.avsc` file under `dir`, recursively, in path order.
    ///
    /// A new event type needs nothing but its file.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, SchemaError> {
        let mut files = Vec::new();
        collect_avsc(dir.as_ref(), &mut files)?;
        files.sort_by_key(|p| version_order(p));
        let mut set = SchemaSet::default();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Read {
                path: path.clone(),
                source,
            })?;
            set.add_text(&text, Some(path))?;
        }
        Ok(set)
    }

    /// Merges all schemas of `other` into `self` (`other` wins for [`SchemaSet::latest`]).
    pub fn extend(&mut self, other: &SchemaSet) {
        for known in other.by_fingerprint.values() {
            self.by_fingerprint.insert(known.fingerprint, known.clone());
        }
        for (name, known) in &other.latest {
            self.latest.insert(name.clone(), known.clone());
        }
    }

    /// The schema with this fingerprint.
    pub fn by_fingerprint(&self, fp: &Fingerprint) -> Option<&Arc<KnownSchema>> {
        self.by_fingerprint.get(fp)
    }

    /// The newest schema with this full name.
    pub fn latest(&self, name: &str) -> Option<&Arc<KnownSchema>> {
        self.latest.get(name)
    }

    /// All schemas, newest version of each name, sorted by name.
    pub fn names(&self) -> Vec<&Arc<KnownSchema>> {
        let mut all: Vec<_> = self.latest.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Number of distinct schemas (all versions).
    pub fn len(&self) -> usize {
        self.by_fingerprint.len()
    }

    /// True when no schema is known.
    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }
}

fn collect_avsc(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SchemaError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SchemaError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SchemaError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_avsc(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "avsc") {
            out.push(path);
        }
    }
    Ok(())
}

/// Sort key that puts `v10.avsc` after `v9.avsc`.
fn version_order(path: &Path) -> (PathBuf, u64, String) {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let version = stem.strip_prefix('v').and_then(|n| n.parse().ok()).unwrap_or(0);
    (path.parent().map(Path::to_path_buf).unwrap_or_default(), version, stem)
}

/// What an unnamed schema is, for [`SchemaSet::add_writer_str`]: its type, and for a
/// union the names (or types) of its branches.
fn describe(schema: &Schema) -> String {
    let branch = |s: &Schema| s.name().map(|n| n.fullname(None)).unwrap_or_else(|| describe(s));
    match schema {
        Schema::Union(union) => format!("union [{}]", union.variants().iter().map(branch).collect::<Vec<_>>().join(", ")),
        Schema::Array(_) => "array".to_owned(),
        Schema::Map(_) => "map".to_owned(),
        other => serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.get("type")?.as_str().map(str::to_owned))).unwrap_or_else(|| "unnamed".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_get_the_fast_decoder_with_the_same_fingerprint() {
        let mut set = SchemaSet::default();
        let known = set
            .add_str(r#"{"type":"record","name":"R","namespace":"n","fields":[
                {"name":"a","type":"string"},{"name":"b","type":["null","long"],"default":null},
                {"name":"c","type":{"type":"array","items":{"type":"record","name":"L","fields":[{"name":"x","type":"int"}]}}}]}"#)
            .expect("valid");
        let fast = known.fast().expect("serde_avro_fast reads it");
        assert_eq!(fast.rabin_fingerprint(), &known.fingerprint.0);
    }

    #[test]
    fn logical_types_keep_the_fast_decoder_and_the_spec_fingerprint() {
        // serde_avro_fast fingerprints per the spec, as Java does; before Herald did too,
        // every schema with a timestamp lost the fast path (and its fingerprint was wrong).
        let text = r#"{"type":"record","name":"Stamped","namespace":"n","fields":[
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"day","type":["null",{"type":"int","logicalType":"date"}],"default":null}]}"#;
        let known = SchemaSet::default().add_str(text).expect("valid");
        let plain = r#"{"type":"record","name":"Stamped","namespace":"n","fields":[
            {"name":"at","type":"long"},{"name":"day","type":["null","int"],"default":null}]}"#;
        let plain = SchemaSet::default().add_str(plain).expect("valid");
        assert_eq!(known.fingerprint, plain.fingerprint, "logical types are not part of the canonical form");
        let fast = known.fast().expect("serde_avro_fast reads it with the same fingerprint");
        assert_eq!(fast.rabin_fingerprint(), &known.fingerprint.0);
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = [PathBuf::from("a/v10.avsc"), PathBuf::from("a/v9.avsc"), PathBuf::from("a/v1.avsc")];
        v.sort_by_key(|p| version_order(p));
        assert_eq!(v[2], PathBuf::from("a/v10.avsc"));
    }
}
