//! The `herald-schemas` binary: exit codes and messages.

use std::path::PathBuf;
use std::process::{Command, Output};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn path(relative: &str) -> String {
    crate_dir().join(relative).display().to_string()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = Command::new(env!("CARGO_BIN_EXE_herald-schemas"))
        .args(args)
        .env_remove("HERALD_SCHEMAS")
        .output()
        .expect("the binary runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (status.code().unwrap_or(-1), text(stdout), text(stderr))
}

const PLACED_V1: &str = "../../schemas/shop/orders/OrderPlaced/v1.avsc";

/// Fingerprints printed by fastavro 1.x (`fingerprint(to_parsing_canonical_form(s), "CRC-64-AVRO")`)
/// and Java's `SchemaNormalization.parsingFingerprint64`; the last two have logical types.
const FASTAVRO: [(&str, &str); 6] = [
    ("tests/fixtures/int.avsc", "8f5c393f1ad57572"),
    (PLACED_V1, "294c17e8455229fd"),
    ("../../schemas/shop/orders/OrderConfirmed/v1.avsc", "cd4140e765f04e6d"),
    ("../../schemas/shop/orders/OrderCancelled/v1.avsc", "0ce8cce00e61f5b3"),
    ("../../schemas/shop/orders/OrderPlaced/v2.avsc", "e424c0d4fd4228ab"),
    ("reference/canonical/timestamp-millis.avsc", "b71df49344e154d0"),
];

#[test]
fn fingerprints_match_fastavro() {
    for (file, expected) in FASTAVRO {
        let (code, out, err) = run(&["fingerprint", &path(file)]);
        assert_eq!((code, out.trim()), (0, expected), "{file}: {err}");
    }
}

#[test]
fn list_shows_subjects_versions_and_fingerprints() {
    let (code, out, err) = run(&["--schemas", &path("../../schemas"), "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shop.orders.OrderPlaced BACKWARD_TRANSITIVE"), "{out}");
    assert!(out.contains("v1   294c17e8455229fd"), "{out}");
}

#[test]
fn the_repository_schemas_pass_the_check() {
    let (code, out, err) = run(&["--schemas", &path("../../schemas"), "check"]);
    assert_eq!(code, 0, "{out}{err}");
    let subjects = subjects_in(std::path::Path::new(&path("../../schemas")));
    assert!(out.contains(&format!("passed: {subjects} subjects")), "{subjects} subjects on disk:\n{out}");
    assert!(out.contains(" 0 violations, 0 errors"), "{out}");
}

/// The folders under `dir` that hold a `vN.avsc`: one subject each.
fn subjects_in(dir: &std::path::Path) -> usize {
    let entries: Vec<_> = std::fs::read_dir(dir).expect("the schemas folder").map(|e| e.expect("an entry").path()).collect();
    let here = entries.iter().any(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.starts_with('v') && name.ends_with(".avsc") && name[1..name.len() - 5].parse::<u32>().is_ok()
    });
    usize::from(here) + entries.iter().filter(|p| p.is_dir()).map(|p| subjects_in(p)).sum::<usize>()
}

#[test]
fn check_reports_every_problem_and_exits_1() {
    let (code, _, err) = run(&["check", "--dir", &path("tests/fixtures/broken")]);
    assert_eq!(code, 1, "{err}");
    for expected in [
        "field `demo.Thing.count`: reader type int cannot read writer type long",
        "field `demo.Thing.size`: reader field `size` is not in the writer and has no default",
        "carries `demo.Missing`, which has no .avsc",
        "settings for subject `demo.Typo`, which does not exist",
        "v2.sample.json: `count`: \"three\" is not a valid int",
        "warning: ",
        "FAILED: 2 subjects, 3 schemas, 2 violations, 3 errors",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// Without a manifest every subject is checked `BACKWARD_TRANSITIVE`, as the README says:
/// v3 reads v2 (its `x` is a long, v2's an int) but not v1, which has no `x` while v3's has
/// no default. (Before, the default was `BACKWARD`, and the check passed.)
#[test]
fn without_a_manifest_every_version_must_stay_readable() {
    let (code, out, err) = run(&["check", "--dir", &path("tests/fixtures/unmanifested")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("BACKWARD_TRANSITIVE") && err.contains("`x`"), "{out}{err}");
}

#[test]
fn compat_accepts_a_compatible_evolution() {
    let dir = "tests/fixtures/evolved/shop/orders/OrderPlaced";
    let (code, out, err) =
        run(&["compat", "--mode", "FULL_TRANSITIVE", &path(&format!("{dir}/v1.avsc")), &path(&format!("{dir}/v2.avsc"))]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("compatible (FULL_TRANSITIVE)"), "{out}");
}

#[test]
fn compat_names_the_field_and_rule_and_exits_1() {
    let breaking = path("tests/fixtures/breaking/shop/orders/OrderPlaced/v2.avsc");
    let (code, _, err) = run(&["compat", "--mode", "backward", &path(PLACED_V1), &breaking]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("field `shop.orders.OrderPlaced.total_cents`: reader type string cannot read writer type long [type-mismatch]"),
        "{err}"
    );
    // FORWARD: the old reader (long) cannot read the new writer (string).
    let (code, _, err) = run(&["compat", "--mode", "FORWARD", &path(PLACED_V1), &breaking]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read data written with the new schema"), "{err}");
    // NONE checks nothing.
    assert_eq!(run(&["compat", "--mode", "NONE", &path(PLACED_V1), &breaking]).0, 0);
}

#[test]
fn unreadable_input_exits_2_naming_file_and_position() {
    let bad = path("tests/fixtures/unreadable/bad-json.avsc");
    let (code, _, err) = run(&["compat", &path(PLACED_V1), &bad]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{bad}:4:3: invalid JSON: expected `,` or `}}`")), "{err}");

    let not_avro = path("tests/fixtures/unreadable/not-avro.avsc");
    let (code, _, err) = run(&["compat", &not_avro, &path(PLACED_V1)]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("{not_avro}: invalid Avro schema")), "{err}");

    let (code, _, err) = run(&["fingerprint", "no/such/file.avsc"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.avsc: cannot read"), "{err}");

    let (code, _, err) = run(&["check", "--dir", "no/such/folder"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/folder"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["compat", &path(PLACED_V1)]).0, 2, "one file is not enough");
    let (code, _, err) = run(&["compat", "--mode", "SIDEWAYS", &path(PLACED_V1), &path(PLACED_V1)]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown compatibility mode"), "{err}");
}
