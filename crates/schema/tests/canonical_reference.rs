//! Herald's parsing canonical forms and fingerprints against the reference
//! implementations, byte for byte: Apache Avro's Java `SchemaNormalization`
//! (`toParsingForm`, `parsingFingerprint64`) and fastavro (`to_parsing_canonical_form`,
//! `fingerprint(..., "CRC-64-AVRO")`).
//!
//! The corpus is `reference/canonical/*.avsc` (every logical type, named types referenced
//! by name, inherited and overridden namespaces, aliases, docs, defaults, nested unions,
//! enums with defaults, maps and arrays of records, fixed, recursion) plus every schema
//! under the repository's `schemas/`. Both references run in CI (`support` says when a
//! local run skips them).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use herald_bus::schema::{Fingerprint, SchemaSet};
use herald_schema::Avsc;
use serde_json::Value;
use support::{avsc_files, crate_dir, repo_root};

/// The corpus: the reference cases and the repository's event schemas.
fn corpus() -> Vec<PathBuf> {
    let mut files = avsc_files(&crate_dir().join("reference/canonical"));
    assert!(files.len() >= 25, "the canonical corpus shrank to {} files", files.len());
    files.extend(avsc_files(&repo_root().join("schemas")));
    files
}

/// What a reference printed for one file: canonical form and fingerprint.
#[derive(Debug, PartialEq)]
struct Verdict {
    canonical: String,
    fingerprint: String,
}

/// Parses the JSON lines `{"file", "canonical", "fingerprint"}` (or `{"file", "error"}`)
/// that `Canonical.java` and `interop.py canonical` print.
fn verdicts(tool: &str, out: &str) -> BTreeMap<PathBuf, Verdict> {
    out.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{tool} printed `{line}`: {e}"));
            let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
            let file = PathBuf::from(text("file").expect("file"));
            if let Some(error) = text("error") {
                panic!("{tool} refuses {}: {error}", file.display());
            }
            (file, Verdict { canonical: text("canonical").expect("canonical"), fingerprint: text("fingerprint").expect("fingerprint") })
        })
        .collect()
}

/// Schemas apache-avro 0.21's model cannot hold as written, so no fingerprint computed
/// from the parsed schema can be right: it reads `uuid` on `fixed(16)` as a `uuid`
/// string, and drops the name of a `duration` fixed. Herald fingerprints the text of a
/// schema (as every test here checks), never the parsed model.
const REWRITTEN_BY_APACHE_AVRO: [&str; 3] = ["uuid-fixed.avsc", "duration.avsc", "logical-record.avsc"];

/// Herald's fingerprint of every file by each way Herald computes one: from the schema
/// text ([`Avsc`], `herald schemas fingerprint`), from the parsed schema
/// ([`Fingerprint::of`], what a codec holds) and in the [`SchemaSet`] (the decoder's
/// index, records only).
fn herald_fingerprints(files: &[PathBuf]) -> Vec<(&'static str, BTreeMap<PathBuf, String>)> {
    let (mut text, mut parsed, mut set) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for file in files {
        let avsc = Avsc::load(file).unwrap_or_else(|e| panic!("{e}"));
        text.insert(file.clone(), avsc.fingerprint().to_string());
        if !REWRITTEN_BY_APACHE_AVRO.iter().any(|name| file.ends_with(name)) {
            parsed.insert(file.clone(), Fingerprint::of(avsc.schema()).to_string());
        }
        if avsc.json().get("type").and_then(Value::as_str) == Some("record") {
            let json = std::fs::read_to_string(file).expect("read");
            let known = SchemaSet::default().add_str(&json).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            set.insert(file.clone(), known.fingerprint.to_string());
        }
    }
    vec![("the schema text", text), ("the parsed schema", parsed), ("the schema set", set)]
}

fn relative(file: &std::path::Path) -> String {
    file.strip_prefix(repo_root()).unwrap_or(file).display().to_string()
}

/// Compares Herald's canonical form and every fingerprint Herald computes with a
/// reference's, listing every difference.
fn compare(reference: &str, theirs: &BTreeMap<PathBuf, Verdict>, files: &[PathBuf]) {
    assert_eq!(theirs.len(), files.len(), "{reference} answered for every file");
    let mut wrong = Vec::new();
    for file in files {
        let ours = Avsc::load(file).unwrap_or_else(|e| panic!("{e}")).canonical_form().to_owned();
        if ours != theirs[file].canonical {
            wrong.push(format!("{}: canonical form\n  herald     {ours}\n  {reference:<10} {}", relative(file), theirs[file].canonical));
        }
    }
    for (way, fingerprints) in herald_fingerprints(files) {
        for (file, ours) in fingerprints {
            if *ours != theirs[&file].fingerprint {
                wrong.push(format!("{}: fingerprint from {way}: herald {ours}, {reference} {}", relative(&file), theirs[&file].fingerprint));
            }
        }
    }
    assert!(wrong.is_empty(), "{} differences from {reference} on {} schemas:\n{}", wrong.len(), files.len(), wrong.join("\n"));
}

#[test]
fn canonical_forms_and_fingerprints_equal_javas() {
    let Some(classpath) = support::java_classpath("canonical_forms_and_fingerprints_equal_javas") else { return };
    let files = corpus();
    let java = verdicts("Java", &support::java(&classpath, "Canonical", &files));
    compare("Java", &java, &files);
}

#[test]
fn canonical_forms_and_fingerprints_equal_fastavros() {
    let Some(python) = support::python("canonical_forms_and_fingerprints_equal_fastavros") else { return };
    let files = corpus();
    let mut args = vec!["canonical".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let fastavro = verdicts("fastavro", &support::interop(&python, &args));
    compare("fastavro", &fastavro, &files);
}
