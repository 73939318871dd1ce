//! Herald's compatibility verdicts against Apache Avro's Java `SchemaCompatibility`.
//!
//! `tests/corpus.json` holds reader/writer pairs with the verdict Java 1.12 gave them
//! (`reference/generate.sh` records it; `reference/cases.json` is the source). Herald must
//! agree on every pair, except where a case documents an intentional difference
//! (`"herald"` and `"difference"` keys).
//!
//! `java_agrees_live` also runs Java now on `reference/cases.json` and checks both the
//! recorded corpus and Herald against it: always in CI, and locally whenever Java 17+ and
//! Maven are installed (see `support`).

mod support;

use std::path::Path;

use herald_schema::{Avsc, compat};
use serde_json::Value;
use support::crate_dir;

fn load(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn field<'a>(case: &'a Value, key: &str) -> &'a str {
    case.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn herald_verdict(case: &Value) -> Result<&'static str, String> {
    let schema = |key: &str| {
        let json = case.get(key).map(Value::to_string).unwrap_or_default();
        Avsc::parse(&json).map_err(|e| format!("{key}: {e}"))
    };
    let (reader, writer) = (schema("reader")?, schema("writer")?);
    Ok(match compat::can_read(&reader, &writer) {
        Ok(()) => "COMPATIBLE",
        Err(_) => "INCOMPATIBLE",
    })
}

/// Compares Herald with the `java` verdicts of `cases`; returns the disagreements.
fn disagreements(cases: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for case in cases {
        let name = field(case, "name");
        let java = field(case, "java");
        // An intentional difference names Herald's verdict and says why.
        let expected = match field(case, "herald") {
            "" => java,
            herald => {
                assert!(!field(case, "difference").is_empty(), "{name}: a `herald` verdict needs a `difference`");
                assert_ne!(herald, java, "{name}: `herald` equals Java's verdict; drop it");
                herald
            }
        };
        match herald_verdict(case) {
            Ok(verdict) if verdict == expected => {}
            Ok(verdict) => out.push(format!("{name}: Herald says {verdict}, expected {expected} (Java {java}: {})", case["java_detail"])),
            Err(e) => out.push(format!("{name}: Herald cannot parse the case: {e}")),
        }
    }
    out
}

#[test]
fn herald_agrees_with_the_recorded_java_verdicts() {
    let cases = load(&crate_dir().join("tests/corpus.json"));
    assert!(cases.len() >= 60, "the corpus shrank to {} cases", cases.len());
    let wrong = disagreements(&cases);
    assert!(wrong.is_empty(), "{} of {} cases disagree:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

#[test]
fn the_corpus_is_recorded_from_the_current_cases() {
    // cases.json is the source; corpus.json must be regenerated when it changes.
    let strip = |cases: Vec<Value>| -> Vec<Value> {
        cases
            .into_iter()
            .map(|mut c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("java");
                    o.remove("java_detail");
                }
                c
            })
            .collect()
    };
    let source = load(&crate_dir().join("reference/cases.json"));
    let recorded = strip(load(&crate_dir().join("tests/corpus.json")));
    assert!(source == recorded, "reference/cases.json changed: run `bash crates/schema/reference/generate.sh`");
}

#[test]
fn java_agrees_live() {
    let Some(classpath) = support::java_classpath("java_agrees_live") else { return };
    let out = support::java(&classpath, "Compat", &[crate_dir().join("reference/cases.json")]);
    let live: Vec<Value> = serde_json::from_str(&out).expect("Compat prints JSON");
    let recorded = load(&crate_dir().join("tests/corpus.json"));
    for (now, then) in live.iter().zip(&recorded) {
        assert_eq!(field(now, "java"), field(then, "java"), "{}: Java's verdict changed; regenerate", field(now, "name"));
    }
    let wrong = disagreements(&live);
    assert!(wrong.is_empty(), "{} cases disagree with live Java:\n{}", wrong.len(), wrong.join("\n"));
}
