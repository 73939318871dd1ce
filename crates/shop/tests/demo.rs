//! The main job (`shop-demo`, what `bash scripts/demo` runs) end to end against the real
//! broker: every process started, orders driven, the pipeline settled; then checked from
//! outside the driver: each order's outcome in the view's own store against what the
//! run's stock and credit files (and the frozen phase) imply, and the tracker's store for
//! the saga guarantee.
//!
//! The driver runs with `--keep-running`: while everything is up, the dashboard (its API,
//! and the page in headless Chromium) shows this run's sagas; then SIGTERM stops it all.
//!
//! `cargo test -p herald-shop --test demo` (needs `KAFKA_BOOTSTRAP_SERVERS`; builds the
//! programs as scripts/demo does: herald-shop, herald-cli for the tracker, and the
//! gateway).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_testkit::browser::{self, Browser};
use serde_json::json;

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

/// The driver while it keeps the pipeline running: if the test fails meanwhile, dropping
/// this stops it (SIGTERM, which stops every process it started) instead of leaving the
/// pipeline running after the test.
struct Driver(Option<std::process::Child>);

impl Driver {
    /// Stops the driver (SIGTERM: it stops every process it started) and waits for it.
    async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("the driver runs");
        let stopped = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(stopped.success());
        tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("shop-demo's status")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
    }
}

/// The dashboard at `url` (the demo's gateway has no `[auth]`: the page opens without a
/// login) counts `total` sagas, `confirmed` of them completed and the rest compensated,
/// and shows a compensated saga's timeline from the order to its cancellation. Checked
/// through its API, then in headless Chromium (skipped without it, except under CI).
/// Errs, instead of panicking, when the API does not count them within 60 s, so that the
/// caller can stop the driver and show what it printed.
async fn dashboard_shows_the_sagas(url: &str, total: usize, confirmed: usize) -> Result<(), String> {
    let base = url.trim_end_matches("/ui");
    let expected = [("completed", confirmed), ("compensated", total - confirmed), ("running", 0), ("failed", 0)];
    let counted = |api: serde_json::Value| api["total"].as_u64() == Some(total as u64) && expected.iter().all(|(state, n)| api["counts"][state].as_u64() == Some(*n as u64));
    // The tracker may still be reading the last events: wait for its counts to settle.
    // Polled by hand rather than with `wait_until`, so that a timeout says what the API
    // last answered.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = match http.get(format!("{base}/ui/api/sagas")).send().await {
            Ok(r) => {
                let status = r.status();
                match r.json::<serde_json::Value>().await {
                    Ok(api) if counted(api.clone()) => break,
                    Ok(api) => format!("{status}: counts {}, total {}, detail {}", api["counts"], api["total"], api["detail"]),
                    Err(e) => format!("{status}, not JSON: {e}"),
                }
            }
            Err(e) => format!("no answer: {e}"),
        };
        if std::time::Instant::now() >= deadline {
            return Err(format!("timed out after 60s waiting for the dashboard's API to count {total} sagas ({expected:?}); it last answered {answer}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(installed) = browser::installed_or_skip("the demo's dashboard in headless chromium") else { return Ok(()) };
    let page = Browser::start(&installed).await;
    page.go(url).await;
    let chips: Vec<String> = std::iter::once(format!("all {total}")).chain(expected.iter().map(|(state, n)| format!("{state} {n}"))).collect();
    page.wait_for(
        "the saga counts",
        "const shown = [...document.querySelectorAll('#saga-counts button')].map(b => b.dataset.state + ' ' + b.textContent.trim().split(' ').pop()); return arguments[0].every(c => shown.includes(c))",
        json!([chips]),
    )
    .await;
    page.click("#saga-counts button[data-state='compensated']").await;
    page.wait_for("the compensated sagas listed", "return document.querySelectorAll('#saga-list tbody tr').length > 0 && document.querySelector('#saga-counts button.active').dataset.state === 'compensated'", json!([])).await;
    page.click("#saga-list tbody tr").await;
    page.wait_for(
        "a compensated saga's timeline, from the order to its cancellation",
        "const steps = [...document.querySelectorAll('#timeline li strong')].map(s => s.textContent); return steps.length >= 3 && steps[0] === 'orders.OrderPlaced' && steps.includes('orders.OrderCancelled')",
        json!([]),
    )
    .await;
    page.stop().await;
    Ok(())
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
    // --keep-running: the dashboard is checked while the pipeline is up, then SIGTERM.
    let mut child = Command::new(&driver)
        .args(["--orders", "80", "--timeouts", "4", "--rate", "30", "--payment-timeout", "10s", "--settle-timeout", "90s", "--keep-running"])
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--gateway-config")
        .arg(&gateway_config)
        .arg("--summary")
        .arg(&summary)
        .env("KAFKA_BOOTSTRAP_SERVERS", config.bootstrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shop-demo runs");
    let stderr = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let (dashboard_tx, dashboard_rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let stdout = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("dashboard: ").and_then(|rest| rest.split_whitespace().next()) {
                let _ = dashboard_tx.send(url.to_owned());
            }
            lines.push(line);
        }
        lines.join("\n")
    });
    // Until the driver prints the dashboard (it settled) or ends without it (it failed).
    let mut driver = Driver(Some(child));
    let dashboard = tokio::task::spawn_blocking(move || dashboard_rx.recv_timeout(Duration::from_secs(900))).await.expect("waiting for the dashboard line");
    let Ok(dashboard) = dashboard else {
        let status = driver.0.take().map(|mut child| child.wait().expect("shop-demo's status"));
        let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
        panic!("shop-demo ended ({status:?}) without keeping the pipeline running; run folder {}\nstdout:\n{stdout}\nstderr:\n{stderr}", run_dir.display());
    };

    // What the inputs imply, read back from the run folder.
    let stock: HashMap<String, i64> = read_json(&run_dir.join("stock.json"));
    let credit: HashMap<String, i64> = read_json(&run_dir.join("credit.json"));
    let journal = std::fs::read_to_string(run_dir.join("orders.jsonl")).expect("orders.jsonl");
    let orders: Vec<Journaled> = journal.lines().map(|l| serde_json::from_str(l).expect("a journaled order")).collect();
    assert_eq!(orders.len(), 80);
    // The driver's default credit for customers not in the file, from its command line.
    let default_credit = 100_000_000;
    let confirmed = orders.iter().filter(|o| implied(o, &stock, &credit, default_credit) == "confirmed").count();

    // The driver keeps the pipeline running also after a run that did not settle as
    // planned: its summary (written before the dashboard line) says so (not settled, an
    // order's outcome other than planned, a failed saga), and then the dashboard's counts
    // cannot match; the summary is the failure to show.
    let said: serde_json::Value = read_json(&summary);
    // The dashboard of the running pipeline shows this run's sagas, in a real browser.
    let as_planned = said["settled"] == true && said["mismatched"].as_array().is_some_and(Vec::is_empty) && said["failed_sagas"].as_array().is_some_and(Vec::is_empty);
    let shown = if as_planned { dashboard_shows_the_sagas(&dashboard, orders.len(), confirmed).await } else { Err("the run did not settle as planned".to_owned()) };
    let status = driver.stop().await;
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    if let Err(e) = shown {
        let logs: String = ["gateway", "tracker"]
            .iter()
            .map(|name| format!("\n{name}.log:\n{}", std::fs::read_to_string(run_dir.join("logs").join(format!("{name}.log"))).unwrap_or_else(|e| e.to_string())))
            .collect();
        panic!("{e}; run folder {}\nsummary: {said}\nstdout:\n{stdout}\nstderr:\n{stderr}{logs}", run_dir.display());
    }
    assert!(status.success(), "shop-demo failed ({status}); run folder {}\nstdout:\n{stdout}\nstderr:\n{stderr}", run_dir.display());

    // What the driver says.
    assert_eq!(said["ingress"], "gateway", "{said}");
    assert!(stdout.contains("timeline of a compensated saga"), "{stdout}");
    // The view was read through the gateway's query routes (the registry found it).
    assert!(stdout.contains("through the gateway: cancelled"), "{stdout}");
    assert!(stdout.contains("everything keeps running"), "{stdout}");
    assert!(stdout.contains("stopped"), "{stdout}");

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
