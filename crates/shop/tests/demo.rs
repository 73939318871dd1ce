//! The main job (`shop-demo`, what `bash scripts/demo` runs) end to end against the real
//! broker: every process started, orders driven, the pipeline settled; then checked from
//! outside the driver: each order's outcome in the view's own store against what the
//! run's stock and credit files (and the frozen phase) imply, and the tracker's store for
//! the saga guarantee.
//!
//! `cargo test -p herald-shop --test demo` (needs `KAFKA_BOOTSTRAP_SERVERS`; builds the
//! programs as scripts/demo does: herald-shop, herald-cli for the tracker, and the
//! gateway).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use herald_projector::Value;
use herald_shop::order_status::{query, OrderStatusRow};
use herald_shop::OrderPlaced;

/// An order as the driver journals it (`orders.jsonl`).
#[derive(Debug, serde::Deserialize)]
struct Journaled {
    order: OrderPlaced,
    frozen: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the inputs imply for `order`: the stock file (a SKU short), then the credit file
/// (customers not in it have `default_credit`), then the frozen phase.
fn implied(order: &Journaled, stock: &HashMap<String, i64>, credit: &HashMap<String, i64>, default_credit: i64) -> String {
    if order.order.lines.iter().any(|l| stock.get(&l.sku).copied().unwrap_or(0) < i64::from(l.quantity)) {
        "cancelled: out-of-stock".into()
    } else if order.order.total_cents > credit.get(&order.order.customer_id).copied().unwrap_or(default_credit) {
        "cancelled: payment-declined".into()
    } else if order.frozen {
        "cancelled: timeout".into()
    } else {
        "confirmed".into()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_main_job_ends_with_the_outcomes_its_inputs_imply() {
    let config = herald_testkit::kafka().await;
    // The programs scripts/demo builds, built as it builds them: shop (the roles, the
    // view, the driver), herald (the tracker: `herald saga track`), the gateway.
    let gateway_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/shop.toml");
    let bin_dir = herald_testkit::workspace_binaries(&["herald-shop", "herald-cli", "herald-gateway"]);
    let driver: PathBuf = bin_dir.join("shop-demo");
    assert_eq!(driver, PathBuf::from(env!("CARGO_BIN_EXE_shop-demo")), "the driver is this package's own");
    let run_dir = std::env::temp_dir().join(herald_testkit::unique("shop-demo"));
    let summary = run_dir.join("summary.json");
    let output = Command::new(&driver)
        .args(["--orders", "80", "--timeouts", "4", "--rate", "30", "--payment-timeout", "6s", "--settle-timeout", "90s"])
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--gateway-config")
        .arg(&gateway_config)
        .arg("--summary")
        .arg(&summary)
        .env("KAFKA_BOOTSTRAP_SERVERS", config.bootstrap())
        .output()
        .expect("shop-demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "shop-demo failed ({}); run folder {}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status, run_dir.display());

    // What the driver says.
    let said: serde_json::Value = read_json(&summary);
    assert_eq!(said["ingress"], "gateway", "{said}");
    assert_eq!(said["settled"], true, "{said}");
    assert!(stdout.contains("timeline of a compensated saga"), "{stdout}");
    // The view was read through the gateway's query routes (the registry found it).
    assert!(stdout.contains("through the gateway: cancelled"), "{stdout}");
    assert!(stdout.contains("stopped"), "{stdout}");

    // What the inputs imply, read back from the run folder.
    let stock: HashMap<String, i64> = read_json(&run_dir.join("stock.json"));
    let credit: HashMap<String, i64> = read_json(&run_dir.join("credit.json"));
    let journal = std::fs::read_to_string(run_dir.join("orders.jsonl")).expect("orders.jsonl");
    let orders: Vec<Journaled> = journal.lines().map(|l| serde_json::from_str(l).expect("a journaled order")).collect();
    assert_eq!(orders.len(), 80);
    // The driver's default credit for customers not in the file, from its command line.
    let default_credit = 100_000_000;

    // What the view's own store says (the processes are stopped: it is final).
    let view = herald_projector::store::open(&format!("sqlite:{}", run_dir.join("order_status.db").display())).expect("the view's store");
    let rows: Vec<OrderStatusRow> = query::list(&mut *view.connect().expect("connect"), &query::Filter { limit: 100_000, ..Default::default() }).expect("the view");
    let rows: HashMap<&str, &OrderStatusRow> = rows.iter().map(|r| (r.order_id.as_str(), r)).collect();
    let mut implied_counts: BTreeMap<String, usize> = BTreeMap::new();
    for order in &orders {
        let expected = implied(order, &stock, &credit, default_credit);
        let row = rows.get(order.order.order_id.as_str()).unwrap_or_else(|| panic!("{} is not in the view", order.order.order_id));
        assert_eq!(row.outcome(), expected, "{row:?}");
        assert_eq!(row.total_cents, Some(order.order.total_cents), "{row:?}");
        match expected.as_str() {
            "confirmed" => assert_eq!((row.stock.as_deref(), row.payment.as_deref(), row.charged_cents), (Some("reserved"), Some("charged"), Some(order.order.total_cents)), "{row:?}"),
            "cancelled: out-of-stock" => assert_eq!(row.stock.as_deref(), Some("rejected"), "{row:?}"),
            "cancelled: payment-declined" => assert_eq!((row.stock.as_deref(), row.payment.as_deref()), (Some("released"), Some("declined")), "{row:?}"),
            // Payments resumed after the cancellation: it refunded the charge or never took it.
            _ => {
                assert_eq!(row.stock.as_deref(), Some("released"), "{row:?}");
                assert!(matches!(row.payment.as_deref(), None | Some("refunded")), "{row:?}");
            }
        }
        *implied_counts.entry(expected).or_default() += 1;
    }
    assert_eq!(rows.len(), orders.len(), "the view holds only this run's orders");
    // Every kind of outcome happened, as many times as the inputs say.
    assert_eq!(implied_counts.len(), 4, "{implied_counts:?}");
    assert_eq!(implied_counts["cancelled: timeout"], 4);
    for (label, n) in &implied_counts {
        assert_eq!(said["got"][label].as_u64(), Some(*n as u64), "{label}: {said}");
    }

    // The tracker's own store: one saga per order, each completed or compensated.
    let sagas = herald_projector::store::open(&format!("sqlite:{}", run_dir.join("sagas.db").display())).expect("the tracker's store");
    let mut conn = sagas.connect().expect("connect");
    let mut tx = conn.read().expect("read");
    let phases = tx.query("SELECT phase, COUNT(*) FROM sagas GROUP BY phase", &[] as &[Value<'_>]).expect("sagas");
    let phases: BTreeMap<String, i64> = phases.iter().map(|r| (r.text(0).expect("phase").to_owned(), r.int(1).expect("count"))).collect();
    let confirmed = implied_counts["confirmed"] as i64;
    assert_eq!(phases, BTreeMap::from([("completed".to_owned(), confirmed), ("compensated".to_owned(), orders.len() as i64 - confirmed)]));
    let _ = std::fs::remove_dir_all(&run_dir);
}
