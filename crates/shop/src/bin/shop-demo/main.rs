//! `shop-demo`: Herald's main job, the shop pipeline in one command (`bash scripts/demo`).
//!
//! On embedded defaults (the local broker, SQLite files in the run folder) it starts, as
//! separate processes, the three roles of the shop's saga (`shop orders|inventory|payments`),
//! the order-status view (`shop order-status`), the saga tracker (`herald saga track`) and
//! the gateway (`herald-gateway`); waits for each to be healthy; places a few hundred
//! orders through the gateway (`POST /orders`) with a mix of outcomes, showing progress,
//! reading their status through the gateway too (`GET /orders`, answered by the
//! order-status view found in the service registry); and ends with the outcome
//! table, the throughput, the latency from request to terminal event, the tracker's
//! verdicts and the timeline of one compensated saga. Then it stops every process in order
//! (SIGTERM, wait), or, with `--keep-running`, prints the URLs and leaves everything up
//! until ctrl-c.
//!
//! The outcomes come from the inputs (see `plan`): a stock file with one SKU sold out, a
//! credit file with a few broke customers, and a phase where the payments process is
//! frozen with SIGSTOP for longer than the payment timeout, so its orders time out (and
//! are compensated when it resumes with SIGCONT). No test hook in any service.
//!
//! Every run uses its own topic prefix (`demo.<time>.<random>.`), consumer groups, stores
//! and run folder, so earlier runs' data never counts. Exit status: 0 when every order
//! reached the outcome its inputs imply and the tracker found every saga completed or
//! compensated within the deadline; 2 when not (the pipeline did not settle, an outcome
//! differs, or the saga guarantee is violated); 1 on any other failure; 130 on ctrl-c.

mod children;
mod ingress;
mod plan;
mod report;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use herald_bus::admin::{self, TopicSpec};
use herald_bus::timestamp::TimestampMillis;
use herald_bus::KafkaConfig;
use herald_shop::order_status::OrderStatusRow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::children::{free_ports, Child, Ready};
use crate::ingress::Ingress;
use crate::plan::{Expect, Planned};
use crate::report::Summary;
use crate::watch::Watch;

/// Herald's main job: the shop pipeline, as processes, driven by a few hundred orders.
#[derive(Debug, Parser)]
#[command(name = "shop-demo")]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Orders to place in all.
    #[arg(long, default_value_t = 300)]
    orders: usize,
    /// Of which placed while payments is frozen (they time out).
    #[arg(long, default_value_t = 10)]
    timeouts: usize,
    /// Orders per second in the first phase, at most (the saga's roles keep up with a few
    /// tens per second: BENCHMARKS.md).
    #[arg(long, default_value_t = 25.0)]
    rate: f64,
    /// Orders placed but not decided yet, at most: the driver waits before placing more,
    /// so a slow machine lowers the rate instead of letting the queues (and the latency)
    /// grow past the payment timeout.
    #[arg(long, default_value_t = 30)]
    window: usize,
    /// The orders role's payment timeout (`10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = herald_ops::parse_duration)]
    payment_timeout: Duration,
    /// How long the pipeline may take to settle after the last order of a phase.
    #[arg(long, default_value = "90s", value_parser = herald_ops::parse_duration)]
    settle_timeout: Duration,
    /// The run folder (default: a new folder under the system's temporary folder).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Where the `shop`, `herald` and `herald-gateway` binaries are (default: beside this
    /// one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The gateway's configuration.
    #[arg(long, default_value = "crates/gateway/shop.toml")]
    gateway_config: PathBuf,
    /// Leave everything running at the end, also when the run did not settle, and print
    /// the URLs; ctrl-c stops it all (the exit status is still the run's).
    #[arg(long)]
    keep_running: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Keep the run's topics on the broker at the end (default: deleted once every process
    /// stopped; the run folder keeps the logs and the stores).
    #[arg(long)]
    keep_topics: bool,
}


/// The public topics (unprefixed), created before anything starts.
const PUBLIC: [&str; 3] = ["shop.orders", "shop.inventory", "shop.payments"];

/// The pipeline's processes, in the order they are stopped, and the run's topic prefix.
struct Pipeline {
    children: Vec<Child>,
    prefix: Option<String>,
}

impl Pipeline {
    /// The first child that exited by itself, said in a line with the end of its log.
    fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|c| {
            let status = c.exited()?;
            Some(format!("{} exited with {status}; the end of its log ({}):\n{}", c.name, c.log.display(), c.log_tail(15)))
        })
    }

    fn get(&self, name: &str) -> anyhow::Result<&Child> {
        self.children.iter().find(|c| c.name == name).with_context(|| format!("no process {name}"))
    }

    /// Stops every child in order: the gateway (no new orders), the saga's roles, then the
    /// readers (view, tracker); each with SIGTERM, waiting up to 20 s.
    async fn stop(&mut self) {
        println!("\nstopping (SIGTERM, then wait):");
        for child in &mut self.children {
            let stopped = child.stop(Duration::from_secs(20)).await;
            let how = match (&stopped.status, stopped.killed) {
                (_, true) => "did not stop within 20 s: killed".to_owned(),
                (Some(s), _) if s.success() => "stopped".to_owned(),
                (Some(s), _) => format!("ended with {s} (see {})", child.log.display()),
                (None, _) => "gone".to_owned(),
            };
            println!("  {:<13} {how} in {:.1} s", child.name, stopped.took.as_secs_f64());
        }
    }
}

/// jemalloc, not glibc's malloc: measured in BENCHMARKS.md ("Aggregates: the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let mut pipeline = Pipeline { children: Vec::new(), prefix: None };
    let ran = {
        let run = run(&cli, &mut pipeline);
        tokio::select! {
            ran = run => Some(ran),
            _ = herald_ops::shutdown_signal() => None,
        }
    };
    let code = match ran {
        None => {
            eprintln!("\ninterrupted");
            130
        }
        Some(Ok(ran)) => {
            // Also after a run that did not settle: what is still running is what to look at.
            if cli.keep_running {
                keep_running(&pipeline, &ran.prefix, &ran.run_dir).await;
            }
            if ran.ok { 0 } else { 2 }
        }
        Some(Err(e)) => {
            eprintln!("\nerror: {e:#}");
            1
        }
    };
    pipeline.stop().await;
    if let (Some(prefix), false) = (&pipeline.prefix, cli.keep_topics) {
        match delete_topics(&KafkaConfig::new(&cli.bootstrap), prefix).await {
            Ok(n) => println!("  deleted the run's {n} topics ({prefix}*; --keep-topics keeps them)"),
            Err(e) => eprintln!("  could not delete the run's topics ({prefix}*): {e:#}"),
        }
    }
    std::process::exit(code);
}

/// Deletes every topic whose name starts with `prefix` (the run's); how many.
async fn delete_topics(config: &KafkaConfig, prefix: &str) -> anyhow::Result<usize> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let names: Vec<String> = admin::list_topics(config).await?.into_iter().map(|t| t.name).filter(|n| n.starts_with(prefix)).collect();
    if names.is_empty() {
        return Ok(0);
    }
    let client: AdminClient<DefaultClientContext> = config.client_config(&[]).create()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = client.delete_topics(&refs, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await?;
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.err()).map(|(name, e)| format!("{name}: {e}")).collect();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join(", "));
    Ok(names.len())
}

/// How a run ended.
struct Ran {
    /// It settled as planned.
    ok: bool,
    /// Its topic prefix.
    prefix: String,
    /// Its folder.
    run_dir: PathBuf,
}

/// The whole run, the pipeline left running.
async fn run(cli: &Cli, pipeline: &mut Pipeline) -> anyhow::Result<Ran> {
    anyhow::ensure!(cli.timeouts < cli.orders, "--timeouts must be fewer than --orders");
    anyhow::ensure!(cli.rate > 0.0, "--rate must be positive");
    let started = Instant::now();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let run_id = format!("{}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"), &random[..6]);
    let prefix = format!("demo.{}.", run_id.replace('-', "."));
    let run_dir = cli.run_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("herald-demo").join(&run_id));
    let logs = run_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("the driver's folder")?.to_path_buf(),
    };
    let config = KafkaConfig::new(&cli.bootstrap);

    // The inputs, and the outcomes they imply.
    std::fs::write(run_dir.join("stock.json"), serde_json::to_vec_pretty(&plan::stock())?)?;
    std::fs::write(run_dir.join("credit.json"), serde_json::to_vec_pretty(&plan::credit())?)?;
    let short = &random[..6];
    let planned = plan::orders(short, cli.orders - cli.timeouts, cli.timeouts);

    // How orders get in.
    let gateway_bin = bin_dir.join("herald-gateway");
    anyhow::ensure!(gateway_bin.is_file(), "no gateway binary at {} (build it: cargo build -p herald-gateway, or give --bin-dir)", gateway_bin.display());
    anyhow::ensure!(cli.gateway_config.is_file(), "no gateway configuration at {}", cli.gateway_config.display());

    println!("Herald's main job: the shop pipeline (run {run_id})");
    println!("  broker        {} (topics, groups and transactional ids prefixed {prefix:?})", cli.bootstrap);
    println!("  run folder    {}", run_dir.display());
    println!("                (logs/ has each process's log; stock.json, credit.json, orders.jsonl: the inputs)");

    pipeline.prefix = Some(prefix.clone());
    // The public topics first, so the readers find them; the roles create the rest.
    let specs: Vec<TopicSpec> = PUBLIC.iter().map(|t| TopicSpec::new(format!("{prefix}{t}")).partitions(6)).collect();
    admin::create_topics(&config, &specs).await.with_context(|| format!("creating the shop's topics on {}", cli.bootstrap))?;

    // The processes.
    let shop = bin_dir.join("shop");
    let herald = bin_dir.join("herald");
    for (bin, build) in [(&shop, "cargo build -p herald-shop"), (&herald, "cargo build -p herald-cli")] {
        anyhow::ensure!(bin.is_file(), "{} is missing (build it: {build}, or give --bin-dir)", bin.display());
    }
    let common = |http: &str| -> Vec<String> { vec!["--bootstrap".into(), cli.bootstrap.clone(), "--topic-prefix".into(), prefix.clone(), "--http".into(), http.to_owned()] };
    // One port for each of the six processes below.
    let mut ports = free_ports(6)?.into_iter();
    let mut addr = || ports.next().map(|p| format!("127.0.0.1:{p}")).context("a port for each process");
    // Made before the processes start: their groups are new (the run's prefix), so every
    // commit that counts comes after this.
    let quiet = Quiet::new(&config, &prefix).await?;
    let mut starting: Vec<Child> = Vec::new();
    {
        let http = addr()?;
        let mut args = vec!["order-status".to_owned()];
        args.extend(common(&http));
        args.extend(["--store".into(), format!("sqlite:{}", run_dir.join("order_status.db").display())]);
        starting.push(Child::spawn("order-status", &shop, &args, http, Ready::Healthy, &logs)?);
    }
    {
        let http = addr()?;
        let args: Vec<String> = vec![
            "--bootstrap".into(),
            cli.bootstrap.clone(),
            "saga".into(),
            "track".into(),
            "--store".into(),
            format!("sqlite:{}", run_dir.join("sagas.db").display()),
            "--topic-prefix".into(),
            prefix.clone(),
            "--group".into(),
            format!("{prefix}saga-tracker"),
            "--stuck-after".into(),
            "5m".into(),
            "--http".into(),
            http.clone(),
        ];
        starting.push(Child::spawn("tracker", &herald, &args, http, Ready::Healthy, &logs)?);
    }
    let stock_file = run_dir.join("stock.json").display().to_string();
    let credit_file = run_dir.join("credit.json").display().to_string();
    for (role, extra) in [
        ("orders", vec!["--payment-timeout".to_owned(), format!("{}ms", cli.payment_timeout.as_millis())]),
        ("inventory", vec!["--stock".to_owned(), stock_file.clone()]),
        // A long session timeout: the frozen phase must not cost payments its partitions.
        ("payments", vec!["--credit".to_owned(), credit_file.clone(), "--default-credit".into(), plan::DEFAULT_CREDIT.to_string(), "--session-timeout".into(), "60s".into()]),
    ] {
        let http = addr()?;
        let mut args = vec![role.to_owned(), "--instance".into(), format!("demo-{role}")];
        args.extend(common(&http));
        args.extend(extra);
        let name: &'static str = match role {
            "orders" => "orders",
            "inventory" => "inventory",
            _ => "payments",
        };
        starting.push(Child::spawn(name, &shop, &args, http, Ready::EnginesAssigned, &logs)?);
    }
    {
        let http = addr()?;
        let args: Vec<String> = vec![
            "--config".into(),
            cli.gateway_config.display().to_string(),
            "--bootstrap".into(),
            cli.bootstrap.clone(),
            "--topic-prefix".into(),
            prefix.clone(),
            "--listen".into(),
            http.clone(),
        ];
        starting.push(Child::spawn("gateway", &gateway_bin, &args, http, Ready::Healthy, &logs)?);
    }
    // Stop order: gateway, roles, readers.
    let order = ["gateway", "orders", "inventory", "payments", "order-status", "tracker"];
    starting.sort_by_key(|c| order.iter().position(|n| *n == c.name).unwrap_or(order.len()));
    pipeline.children = starting;

    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    println!("\nstarting {} processes:", pipeline.children.len());
    for child in &mut pipeline.children {
        let took = child.wait_ready(&client, Duration::from_secs(120)).await?;
        println!("  {:<13} pid {:<7} {:<26} ready after {:.1} s", child.name, child.pid().unwrap_or(0), child.url(), took.as_secs_f64());
    }

    let gateway = pipeline.get("gateway")?.url();
    let ingress = Ingress::new(gateway.clone(), client.clone());
    println!("\norders go in {}", ingress.describe());
    println!("their status is read through the gateway too: GET {gateway}/orders[/ORDER_ID] (the order-status view, found in the service registry {prefix}herald.services)");
    let watch = Watch::new(client.clone(), gateway, pipeline.get("tracker")?.url());
    let sent: Arc<Mutex<HashMap<String, i64>>> = Arc::new(Mutex::new(HashMap::new()));
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let ingress = Arc::new(ingress);
    let mut journal = String::new();
    for p in &planned {
        journal.push_str(&serde_json::to_string(p)?);
        journal.push('\n');
    }
    std::fs::write(run_dir.join("orders.jsonl"), journal)?;

    // Phase 1: the orders of the first three kinds, at the rate asked.
    let (normal, frozen): (Vec<&Planned>, Vec<&Planned>) = planned.iter().partition(|p| !p.frozen);
    let counts = plan::expected_counts(&planned);
    println!(
        "\nphase 1: {} orders at up to {}/s, at most {} undecided at a time ({} to confirm, {} with a sold-out SKU, {} from customers without credit)",
        normal.len(),
        cli.rate,
        cli.window,
        counts[&Expect::Confirmed],
        counts[&Expect::OutOfStock],
        counts[&Expect::Declined]
    );
    let phase1_started_ms = chrono::Utc::now().timestamp_millis();
    let progress = bar(normal.len() as u64);
    let mut placing = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cli.rate));
    let mut last_poll = Instant::now();
    let mut decided = 0;
    let mut line_at = Instant::now();
    let mut stalled = None;
    'placing: for (n, p) in normal.iter().enumerate() {
        tick.tick().await;
        // At most `window` orders placed and not decided yet.
        let waiting_since = Instant::now();
        loop {
            if last_poll.elapsed() > Duration::from_millis(250) || n.saturating_sub(decided) >= cli.window {
                last_poll = Instant::now();
                let view = watch.orders().await.unwrap_or_default();
                decided = normal.iter().filter(|p| view.get(&p.order.order_id).is_some_and(OrderStatusRow::is_decided)).count();
                if !progress.is_hidden() || line_at.elapsed() > Duration::from_secs(2) {
                    line_at = Instant::now();
                    show(&progress, &normal, &view, n.saturating_sub(decided), "placing");
                }
            }
            if n.saturating_sub(decided) < cli.window {
                break;
            }
            if let Some(exited) = pipeline.exited() {
                stalled = Some(exited);
                break 'placing;
            }
            if waiting_since.elapsed() > cli.settle_timeout {
                stalled = Some(format!("no order decided for {:?} with {} undecided", cli.settle_timeout, cli.window));
                break 'placing;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        placing.spawn(place(ingress.clone(), (*p).clone(), sent.clone(), failures.clone()));
        while placing.try_join_next().is_some() {}
    }
    while placing.join_next().await.is_some() {}
    if let Some(why) = &stalled {
        progress.suspend(|| println!("  stopped placing orders: {why}"));
    }
    let (settled1, view) = match stalled {
        Some(_) => (false, watch.orders().await.unwrap_or_default()),
        None => settle(&watch, pipeline, &normal, &progress, cli.settle_timeout).await,
    };
    progress.finish_and_clear();
    report_phase(&normal, &view, settled1);
    let phase1_decided: Vec<i64> = normal.iter().filter_map(|p| view.get(&p.order.order_id).and_then(|r| r.decided_ms)).collect();
    let phase1_last_ms = phase1_decided.iter().copied().max().unwrap_or(phase1_started_ms);

    // Phase 2: payments frozen, orders placed; they time out; payments resumes.
    let mut settled2 = true;
    if !frozen.is_empty() && settled1 {
        let payments = pipeline.get("payments")?;
        println!(
            "\nphase 2: payments frozen (SIGSTOP pid {}), {} orders placed; the orders role cancels them after its payment timeout ({:?})",
            payments.pid().unwrap_or(0),
            frozen.len(),
            cli.payment_timeout
        );
        payments.freeze()?;
        let frozen_at = Instant::now();
        let progress = bar(frozen.len() as u64);
        for p in &frozen {
            placing.spawn(place(ingress.clone(), (*p).clone(), sent.clone(), failures.clone()));
        }
        while placing.join_next().await.is_some() {}
        let (done, view) = settle(&watch, pipeline, &frozen, &progress, cli.payment_timeout + Duration::from_secs(60)).await;
        settled2 = done;
        progress.finish_and_clear();
        pipeline.get("payments")?.thaw()?;
        println!("  payments resumed (SIGCONT) after {:.1} s frozen", frozen_at.elapsed().as_secs_f64());
        report_phase(&frozen, &view, done);
    }

    // Settling: every saga completed or compensated, per the tracker, and every process
    // has read all there is. The second matters after the thaw: the orders frozen in
    // payments are compensated before payments, resumed, charges and refunds them.
    println!("\nsettling: waiting for the tracker to see every saga completed or compensated (compensations after the resume included) and every consumer group to have read all there is");
    let all: Vec<&Planned> = planned.iter().collect();
    let ids: std::collections::HashSet<&str> = all.iter().map(|p| p.order.order_id.as_str()).collect();
    // (Not waiting when an earlier phase did not settle: the run failed already.)
    let deadline = Instant::now() + if settled1 && settled2 { cli.settle_timeout } else { Duration::ZERO };
    let mut progress_note = String::new();
    let mut quiet_before = false;
    let (sagas, sagas_settled) = loop {
        let sagas: Vec<watch::Saga> = watch.sagas().await.unwrap_or_default().into_iter().filter(|s| ids.contains(s.subject.as_str())).collect();
        let finished = sagas.iter().filter(|s| s.state == "completed" || s.state == "compensated").count();
        let failed = sagas.iter().any(|s| s.state == "failed");
        // The view has applied every event the tracker recorded (they read the same topics
        // in their own projectors).
        let view = watch.orders().await.unwrap_or_default();
        let caught_up = sagas.iter().all(|s| view.get(&s.subject).is_some_and(|r| r.events == s.events));
        if failed {
            break (sagas, false);
        }
        // Quiet twice in a row: a transaction still open when the groups were read (its
        // records not readable yet) is committed by the next look.
        if sagas.len() == all.len() && finished == all.len() && caught_up {
            match quiet.check().await {
                Ok(None) if quiet_before => break (sagas, true),
                Ok(None) => quiet_before = true,
                Ok(Some(busy)) => {
                    quiet_before = false;
                    progress_note = format!("every saga finished; {busy}");
                }
                Err(e) => {
                    quiet_before = false;
                    progress_note = format!("every saga finished; consumer groups not read: {e:#}");
                }
            }
        } else {
            quiet_before = false;
        }
        if Instant::now() > deadline {
            println!("  not settled within {:?}: {} of {} sagas finished{}", cli.settle_timeout, finished, all.len(), if progress_note.is_empty() { String::new() } else { format!(" ({progress_note})") });
            break (sagas, false);
        }
        if let Some(exited) = pipeline.exited() {
            println!("  {exited}");
            break (sagas, false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let view = watch.orders().await.context("reading the order-status view")?;
    let failures = failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();

    // The report.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatched = Vec::new();
    for p in &planned {
        *expected.entry(p.expect.label().to_owned()).or_default() += 1;
        let outcome = match view.get(&p.order.order_id) {
            Some(row) => row.outcome(),
            None if sent.contains_key(&p.order.order_id) => "not in the view".to_owned(),
            None => "not placed (the run stopped)".to_owned(),
        };
        if outcome != p.expect.label() {
            mismatched.push(format!("{}: expected {}, got {outcome}", p.order.order_id, p.expect.label()));
        }
        *got.entry(outcome).or_default() += 1;
    }
    let latencies = report::latencies(&planned, &sent, &view);
    let mut all_latencies: Vec<i64> = latencies.values().flatten().copied().collect();
    let (saga_states, failed_sagas) = report::saga_states(&sagas);
    let phase1_seconds = (phase1_last_ms - phase1_started_ms).max(1) as f64 / 1000.0;
    let summary = Summary {
        run: run_id.clone(),
        topic_prefix: prefix.clone(),
        run_dir: run_dir.display().to_string(),
        ingress: "gateway".to_owned(),
        orders: planned.len(),
        expected,
        got,
        mismatched,
        sagas: saga_states,
        failed_sagas,
        settled: settled1 && settled2 && sagas_settled && failures.is_empty(),
        throughput_per_s: phase1_decided.len() as f64 / phase1_seconds,
        p50_ms: report::percentile(&mut all_latencies, 0.5),
        p99_ms: report::percentile(&mut all_latencies, 0.99),
    };
    println!("\n{}", report::table(&summary, &latencies));
    println!(
        "throughput: {} orders decided from the first request to the last outcome of phase 1 in {:.1} s = {:.1} orders/s (placed at up to {}/s, at most {} undecided)",
        phase1_decided.len(),
        phase1_seconds,
        summary.throughput_per_s,
        cli.rate,
        cli.window
    );
    println!("latency: from the request to the order's terminal event (OrderConfirmed/OrderCancelled event time); timeouts include the payment timeout");
    println!(
        "tracker: {} sagas: {}",
        sagas.len(),
        summary.sagas.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
    );
    for f in &summary.failed_sagas {
        println!("  SAGA GUARANTEE VIOLATED: {f}");
    }
    for m in summary.mismatched.iter().take(20) {
        println!("  UNEXPECTED: {m}");
    }
    if summary.mismatched.len() > 20 {
        println!("  ... and {} more unexpected outcomes", summary.mismatched.len() - 20);
    }
    let retried = ingress.retried.load(std::sync::atomic::Ordering::Relaxed);
    if retried > 0 {
        println!("requests: {retried} tries were retries with the order's Idempotency-Key (the gateway answered 503, 409 or not at all)");
    }
    for f in failures.iter().take(20) {
        println!("  REQUEST FAILED: {f}");
    }
    if failures.len() > 20 {
        println!("  ... and {} more failed requests", failures.len() - 20);
    }

    // One compensated saga: a timed-out one if there is one (the richest), else any.
    let mut compensated: Vec<&watch::Saga> = sagas.iter().filter(|s| s.state == "compensated").collect();
    compensated.sort_by_key(|s| (view.get(&s.subject).is_none_or(|r| r.reason.as_deref() != Some("timeout")), -s.events));
    if let Some(saga) = compensated.first() {
        match watch.saga(&saga.id).await {
            Ok(detail) => {
                let outcome = view.get(&saga.subject).map_or_else(|| "?".to_owned(), OrderStatusRow::outcome);
                println!("\ntimeline of a compensated saga, {}", report::timeline(&detail, &outcome).trim_end());
                match watch.order(&saga.subject).await {
                    Ok(row) => println!("GET /orders/{} through the gateway: {}", saga.subject, row.outcome()),
                    Err(e) => println!("(cannot read order {} through the gateway: {e:#})", saga.subject),
                }
            }
            Err(e) => println!("\n(cannot read a compensated saga's timeline: {e:#})"),
        }
    }
    if let Some(path) = &cli.summary {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let ok = summary.settled && summary.mismatched.is_empty() && summary.failed_sagas.is_empty();
    println!(
        "\n{} after {:.1} s; logs and stores in {}",
        if ok { "the pipeline settled as planned" } else { "FAILED: the pipeline did not settle as planned" },
        started.elapsed().as_secs_f64(),
        run_dir.display()
    );
    Ok(Ran { ok, prefix, run_dir })
}

/// Prints where everything is and waits for ctrl-c (then `main` stops it all).
async fn keep_running(pipeline: &Pipeline, prefix: &str, run_dir: &Path) {
    println!("\neverything keeps running (ctrl-c stops it all, in order):");
    for child in &pipeline.children {
        let extra = match child.name {
            "order-status" => format!("  {0}/views/order_status  {0}/views/order_status/ORDER_ID", child.url()),
            "tracker" => format!("  {0}/sagas  {0}/sagas/ID  (herald saga list --url {0})", child.url()),
            "gateway" => format!("  POST {0}/orders  GET {0}/orders/ORDER_ID  GET {0}/orders?status=cancelled  (herald services --topic {1}herald.services)", child.url(), prefix),
            _ => String::new(),
        };
        let url = child.url();
        println!("  {:<13} pid {:<7} {url}/health {url}/metrics{extra}", child.name, child.pid().unwrap_or(0));
    }
    println!("  topics: {prefix}shop.orders, {prefix}shop.inventory, {prefix}shop.payments; logs in {}", run_dir.join("logs").display());
    if let Ok(gateway) = pipeline.get("gateway") {
        println!("\ndashboard: {}/ui  (sagas and their timelines, topics and rates, groups and lag, services, dead letters with replay)", gateway.url());
        println!("  the demo's gateway.toml has no [auth]: the page is open to whoever reaches this address; with [auth] it asks once for an API key or token with the admin scope");
    }
    herald_ops::shutdown_signal().await;
}

/// Places one order, recording when its request started, or why it failed.
async fn place(ingress: Arc<Ingress>, planned: Planned, sent: Arc<Mutex<HashMap<String, i64>>>, failures: Arc<Mutex<Vec<String>>>) {
    let mut order = planned.order;
    let now = TimestampMillis::now();
    order.placed_at = Some(now);
    sent.lock().unwrap_or_else(|p| p.into_inner()).insert(order.order_id.clone(), now.as_millis());
    if let Err(e) = ingress.place(&order).await {
        failures.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{}: {e:#}", order.order_id));
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal: lines are printed
/// instead).
fn bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("  {bar:30} {pos}/{len} decided  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// Updates the bar from the view: how many of `orders` are decided, per outcome.
fn show(bar: &ProgressBar, orders: &[&Planned], view: &HashMap<String, OrderStatusRow>, in_flight: usize, doing: &str) {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut decided = 0;
    for p in orders {
        if let Some(row) = view.get(&p.order.order_id).filter(|r| r.is_decided()) {
            decided += 1;
            *by.entry(row.outcome().replace("cancelled: ", "")).or_default() += 1;
        }
    }
    let outcomes = by.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ");
    let msg = format!("{doing}, {in_flight} undecided; {outcomes}");
    bar.set_position(decided as u64);
    bar.set_message(msg.clone());
    if bar.is_hidden() {
        println!("  {decided}/{} decided: {msg}", orders.len());
    }
}

/// Whether the run's processes have read all there is: the lag of every consumer group
/// they registered (and of each engine's `<group>.repartition`), read by herald-services'
/// inspector (committed offsets from `__consumer_offsets`, as lag exporters read them).
struct Quiet {
    inspector: Arc<herald_services::groups::Inspector>,
    registry: herald_services::Settings,
}

impl Quiet {
    async fn new(config: &KafkaConfig, prefix: &str) -> anyhow::Result<Quiet> {
        let config = config.clone();
        let inspector = tokio::task::spawn_blocking(move || {
            let inspector = herald_services::groups::Inspector::new(&config, Duration::from_secs(10))?;
            // The run's groups are new: the offsets topic's history holds none of their
            // commits. Without the skip the first inspection reads that history: slower
            // (tens of seconds after a long test run), as right.
            if let Err(e) = inspector.skip_history() {
                eprintln!("  (consumer group inspection reads the offsets topic's history: {e})");
            }
            Ok::<_, herald_services::RegistryError>(inspector)
        })
        .await?
        .context("creating the consumer groups' inspector")?;
        Ok(Quiet { inspector: Arc::new(inspector), registry: herald_services::Settings::default().topic(format!("{prefix}{}", herald_services::settings::DEFAULT_TOPIC)) })
    }

    /// `None` when every group has read to the end; else which have not.
    async fn check(&self) -> anyhow::Result<Option<String>> {
        let inspector = self.inspector.clone();
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
            let mut groups = std::collections::BTreeSet::new();
            for entry in inspector.registry(&registry)? {
                for group in &entry.instance.consumer_groups {
                    groups.insert(group.clone());
                    groups.insert(format!("{group}.repartition"));
                }
            }
            anyhow::ensure!(!groups.is_empty(), "no consumer group registered");
            let busy: Vec<String> = inspector.inspect(&groups)?.into_iter().filter(|g| g.lag_records > 0).map(|g| format!("{} behind by {}", g.group, g.lag_records)).collect();
            Ok((!busy.is_empty()).then(|| busy.join(", ")))
        })
        .await?
    }
}

/// Waits until every order of `orders` is decided in the view (or `within` passes);
/// returns whether they all were, and the view.
async fn settle(watch: &Watch, pipeline: &mut Pipeline, orders: &[&Planned], bar: &ProgressBar, within: Duration) -> (bool, HashMap<String, OrderStatusRow>) {
    let deadline = Instant::now() + within;
    let mut last_line = Instant::now();
    loop {
        let view = watch.orders().await.unwrap_or_default();
        let decided = orders.iter().filter(|p| view.get(&p.order.order_id).is_some_and(OrderStatusRow::is_decided)).count();
        if decided == orders.len() || Instant::now() > deadline {
            return (decided == orders.len(), view);
        }
        if let Some(exited) = pipeline.exited() {
            bar.suspend(|| println!("  {exited}"));
            return (false, view);
        }
        if !bar.is_hidden() || last_line.elapsed() > Duration::from_secs(2) {
            last_line = Instant::now();
            show(bar, orders, &view, orders.len() - decided, "waiting for outcomes");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One line per phase: how its orders ended.
fn report_phase(orders: &[&Planned], view: &HashMap<String, OrderStatusRow>, settled: bool) {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for p in orders {
        *by.entry(view.get(&p.order.order_id).map_or_else(|| "not in the view".to_owned(), OrderStatusRow::outcome)).or_default() += 1;
    }
    let outcomes = by.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ");
    println!("  {}: {outcomes}", if settled { "all decided" } else { "NOT ALL DECIDED in time" });
}
