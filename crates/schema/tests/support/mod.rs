//! The reference implementations the schema tests judge Herald against: Apache Avro's
//! Java library (`reference/fetch.sh` fetches it from Maven Central into a cache outside
//! the repository and compiles the programs beside it) and Python's fastavro (the interop
//! venv, `HERALD_PYTHON=$(scripts/python-env python)`).
//!
//! Both run whenever their tools are there. Without them, a test fails when `CI` is set
//! (CI must not pass by skipping the check) and otherwise prints why and returns early.

#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

/// This crate's folder.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    crate_dir().join("../..")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `None` after printing why the check cannot run here; a panic in CI.
fn unavailable<T>(test: &str, why: &str) -> Option<T> {
    assert!(!in_ci(), "{test} cannot run: {why}");
    eprintln!("skipping {test}: {why}");
    None
}

fn on_path(tool: &str) -> bool {
    Command::new(tool).arg("-version").output().is_ok() || Command::new(tool).arg("--version").output().is_ok()
}

/// The Java classpath of the Avro reference programs (`reference/fetch.sh`), or `None`
/// when Java or Maven is missing outside CI.
pub fn java_classpath(test: &str) -> Option<String> {
    for tool in ["java", "javac", "mvn"] {
        if !on_path(tool) {
            return unavailable(test, &format!("`{tool}` is not installed (Java 17+ and Maven run Apache Avro's Java reference)"));
        }
    }
    let fetch = Command::new("bash").arg(crate_dir().join("reference/fetch.sh")).output().expect("bash runs");
    assert!(fetch.status.success(), "reference/fetch.sh failed: {}", String::from_utf8_lossy(&fetch.stderr));
    Some(String::from_utf8_lossy(&fetch.stdout).trim().to_owned())
}

/// Runs Java program `class` of `reference/` with `args`; returns its stdout.
pub fn java(classpath: &str, class: &str, args: &[PathBuf]) -> String {
    let out = Command::new("java").args(["-cp", classpath, class]).args(args).output().expect("java runs");
    assert!(out.status.success(), "java {class} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("Java prints UTF-8")
}

/// The interop venv's Python (`HERALD_PYTHON`), or `None` when it is not set outside CI.
pub fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("HERALD_PYTHON").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => unavailable(test, "HERALD_PYTHON is not set (run `scripts/python-env`, then HERALD_PYTHON=$(scripts/python-env python))"),
    }
}

/// Runs `interop/python/interop.py ARGS` with `python`; returns its stdout.
pub fn interop(python: &Path, args: &[String]) -> String {
    let out = Command::new(python).arg(repo_root().join("interop/python/interop.py")).args(args).output().expect("python runs");
    assert!(out.status.success(), "interop.py {} failed: {}", args[0], String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("interop.py prints UTF-8")
}

/// Every `.avsc` under `dir`, sorted.
pub fn avsc_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "avsc") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}
