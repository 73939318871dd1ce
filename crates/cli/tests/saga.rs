//! `herald saga check|diagram` (no broker needed).

use std::process::Command;

fn herald(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_herald")).args(args).output().expect("herald runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn saga_check_passes_the_reference_saga() {
    let (code, out, err) = herald(&["saga", "check"]);
    assert_eq!((code, out.as_str()), (0, "saga check: ok\n"), "{err}");
}

#[test]
fn saga_diagram_prints_mermaid() {
    let (code, out, err) = herald(&["saga", "diagram"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("flowchart LR\n"), "{out}");
    assert!(out.contains("t_shop_inventory_commands -- \"repartition by sku\" --> p_inventory_stock"), "{out}");
}
