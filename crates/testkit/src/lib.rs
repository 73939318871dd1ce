//! # herald-testkit: what Herald's tests stand on
//!
//! - [`kafka`]: a real broker for this test run: `KAFKA_BOOTSTRAP_SERVERS` when set (what
//!   `scripts/kafka start` and CI provide); with `HERALD_TESTCONTAINERS=1` and Docker, an
//!   Apache Kafka container; otherwise a failure that says how to start one.
//! - [`unique`]: topic and group names no other test (or earlier run) uses, so tests run
//!   in parallel against one broker.
//! - [`topic`]: creates a uniquely named topic.
//! - [`wait_until`]: waits for a condition with a deadline, instead of sleeping.
//! - [`runtime_drops_within`]: checks that what a test leaves running lets its runtime
//!   shut down.
//! - [`PrivateBroker`]: a broker of the test's own, to stop, restart or reconfigure.
//! - [`PrivatePostgres`]: a PostgreSQL server of the test's own, to kill and restart.
//! - [`browser`]: a headless Chromium driven over WebDriver, for the web pages' tests.
//! - [`parcels`]: an event whose schema uses a named type several times, for the
//!   interoperability tests.
//!
//! This crate is for tests only; it is not published.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub mod browser;
mod broker;
mod fresh_database;
pub mod parcels;
mod postgres;
pub mod tls;

pub use broker::{free_port, PrivateBroker};
pub use fresh_database::fresh_postgres;
pub use postgres::PrivatePostgres;

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::KafkaConfig;
use tokio::sync::OnceCell;

static CONTAINER: OnceCell<Result<String, String>> = OnceCell::const_new();

/// A configuration pointing at a real broker (see the crate docs for where it comes from).
///
/// Panics with instructions when no broker is configured: a test must never pass without
/// the broker it needs.
pub async fn kafka() -> KafkaConfig {
    if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        return KafkaConfig::new(bootstrap);
    }
    if std::env::var("HERALD_TESTCONTAINERS").as_deref() == Ok("1") {
        let started = CONTAINER.get_or_init(start_container).await;
        match started {
            Ok(bootstrap) => return KafkaConfig::new(bootstrap.clone()),
            Err(e) => panic!("HERALD_TESTCONTAINERS=1 but the Kafka container did not start: {e}"),
        }
    }
    panic!(
        "no Kafka broker for the tests: run `scripts/kafka start` and set \
         KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 (or use `bash scripts/test`), \
         or set HERALD_TESTCONTAINERS=1 where Docker runs"
    )
}

async fn start_container() -> Result<String, String> {
    use testcontainers::runners::AsyncRunner;
    use testcontainers_modules::kafka::apache::Kafka;
    let container = Kafka::default().start().await.map_err(|e| e.to_string())?;
    let port = container
        .get_host_port_ipv4(testcontainers_modules::kafka::apache::KAFKA_PORT)
        .await
        .map_err(|e| e.to_string())?;
    // Keep the container for the whole test process; the testcontainers reaper removes it.
    std::mem::forget(container);
    Ok(format!("127.0.0.1:{port}"))
}

/// A name unique to this call: `prefix` + process id + counter + random suffix. Valid as
/// a Kafka topic or group name (dots only, no underscores).
///
/// ```
/// let a = herald_testkit::unique("t.orders");
/// let b = herald_testkit::unique("t.orders");
/// assert_ne!(a, b);
/// assert!(herald_bus::topic::validate_name(&a).is_ok());
/// ```
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}.{}.{n}.{}", std::process::id(), &random[..8])
}

/// Creates a topic named [`unique`]`(prefix)` with `partitions` partitions and returns
/// its name.
pub async fn topic(config: &KafkaConfig, prefix: &str, partitions: i32) -> String {
    let name = unique(prefix);
    if let Err(e) = create_topics(config, &[TopicSpec::new(&name).partitions(partitions)]).await {
        panic!("cannot create test topic {name}: {e}");
    }
    name
}

/// The address a Herald process prints on stdout as `http: ADDR` once its HTTP server is
/// bound (`--http 127.0.0.1:0`), as `http://ADDR`. The rest of its output is read and
/// dropped on a thread of its own, so the process never blocks on a full pipe. Panics if
/// the process closes its stdout first.
///
/// ```no_run
/// # async fn run() {
/// let mut child = std::process::Command::new("shop").args(["order-status", "--http", "127.0.0.1:0"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
/// let base = herald_testkit::printed_address(child.stdout.take().unwrap()).await;
/// # drop(base); }
/// ```
pub async fn printed_address(stdout: std::process::ChildStdout) -> String {
    use std::io::BufRead;
    tokio::task::spawn_blocking(move || {
        let mut stdout = std::io::BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stdout.read_line(&mut line).expect("the process's stdout") > 0, "the process exited before printing its address");
            if let Some(addr) = line.trim().strip_prefix("http: ") {
                let address = format!("http://{addr}");
                std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
                return address;
            }
        }
    })
    .await
    .expect("reading the process's stdout")
}

/// Runs `program` with a property librdkafka does not know, given as a
/// `HERALD_RDKAFKA_*` variable, and asserts that it stops at start and names it: the
/// program reads its Kafka client settings from the environment
/// ([`KafkaConfig::with_env`]). Give it arguments that fail fast otherwise (an
/// unreachable `--bootstrap`), so that a program ignoring the variable fails the check
/// rather than running on.
///
/// ```no_run
/// let shop = std::process::Command::new("shop");
/// herald_testkit::assert_reads_rdkafka_env(shop);
/// ```
pub fn assert_reads_rdkafka_env(mut program: std::process::Command) {
    let output = program.env("HERALD_RDKAFKA_NO_SUCH_PROPERTY", "1").env("RUST_BACKTRACE", "0").output().expect("run the program");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("no.such.property"), "{stderr}");
}

/// Waits until `condition` returns true, checking every 20 ms, for at most `timeout`.
/// Panics with `what` if the deadline passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `setup` on a tokio runtime of its own with **one worker thread** (a one-CPU
/// container's default), then drops that runtime with whatever `setup` left running on
/// it, as a test that ends or a `main` that returns without stopping its tasks does.
/// Panics if dropping the runtime does not return within `timeout`: something left
/// running waits for tasks that no runtime will run again.
///
/// ```
/// herald_testkit::runtime_drops_within(std::time::Duration::from_secs(5), || async {
///     tokio::spawn(std::future::pending::<()>());
/// });
/// ```
pub fn runtime_drops_within<F, Fut>(timeout: Duration, setup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
        runtime.block_on(setup());
        drop(runtime);
        let _ = dropped_tx.send(());
    });
    assert!(dropped_rx.recv_timeout(timeout).is_ok(), "dropping the runtime did not return within {timeout:?}");
}

/// Reads every record currently in `topic` (all partitions, from the beginning) until
/// `count` records were read or `timeout` passes; returns them in arrival order.
pub async fn read_all(config: &KafkaConfig, topic: &str, count: usize, timeout: Duration) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("cannot create reader: {e}"));
    consumer.subscribe(&[topic]).unwrap_or_else(|e| panic!("cannot subscribe to {topic}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        }
    }
    out
}

/// The number of records in `topic`: the sum over partitions of high watermark minus low
/// watermark. Deterministic, unlike reading until a timeout.
pub async fn record_count(config: &KafkaConfig, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let bootstrap = config.bootstrap().to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap_or_else(|e| panic!("cannot create client: {e}"));
        let metadata = client
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
        let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
        (0..partitions as i32)
            .map(|p| {
                let (low, high) = client
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
                high - low
            })
            .sum()
    })
    .await
    .unwrap_or_else(|e| panic!("watermark task: {e}"))
}

/// The offsets `group` has committed for `topic`, per partition (absent when none).
pub async fn committed(config: &KafkaConfig, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let bootstrap = config.bootstrap().to_owned();
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .create()
            .unwrap_or_else(|e| panic!("cannot create client: {e}"));
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let offsets = client
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("committed offsets of {group}: {e}"));
        offsets
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .collect()
    })
    .await
    .unwrap_or_else(|e| panic!("committed task: {e}"))
}

/// The binary of example `example` of workspace package `package`, for tests that run it
/// as a process. `cargo test --workspace` builds every example into the test's target
/// folder; when it is missing (a test run of one package), it is built here once.
///
/// ```no_run
/// let program = herald_testkit::example_binary("herald-projector", "order_totals");
/// assert!(program.ends_with("examples/order_totals"));
/// ```
pub fn example_binary(package: &str, example: &str) -> std::path::PathBuf {
    example_binary_with(package, example, &[])
}

/// [`example_binary`] of an example that needs cargo features (`required-features`), built
/// with `features` (once per test process, so never a stale copy: cargo finds it up to
/// date in a moment when it is).
///
/// ```no_run
/// let program = herald_testkit::example_binary_with("herald-projector", "order_totals_crash", &["crash-points"]);
/// assert!(program.ends_with("examples/order_totals_crash"));
/// ```
pub fn example_binary_with(package: &str, example: &str, features: &[&str]) -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the test's own executable");
    // target/<profile>/deps/<test binary>
    let target = exe.parent().and_then(|deps| deps.parent()).expect("the target folder").to_path_buf();
    let bin = target.join("examples").join(example);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let name = format!("{package}/{example}");
    if !built.contains(&name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "-p", package, "--example", example]);
        if !features.is_empty() {
            build.args(["--features", &features.join(",")]);
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building example {example} of {package} failed");
        built.push(name);
    }
    bin
}

/// The binaries of workspace `packages`, for tests that run other packages' programs as
/// processes (`env!("CARGO_BIN_EXE_...")` names only the test's own package's): built (or
/// found up to date) together with `cargo build -p A -p B ... --bins`, as a script that
/// builds the same set does (so its build then finds them), into the test's target
/// folder. Returns that folder (`target/<profile>`); never a stale copy.
///
/// ```no_run
/// let bin = herald_testkit::workspace_binaries(&["herald-cli"]);
/// assert!(bin.join("herald").is_file());
/// ```
pub fn workspace_binaries(packages: &[&str]) -> std::path::PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let exe = std::env::current_exe().expect("the test's own executable");
    // target/<profile>/deps/<test binary>
    let target = exe.parent().and_then(|deps| deps.parent()).expect("the target folder").to_path_buf();
    let _building = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.arg("build");
    for package in packages {
        build.args(["-p", package]);
    }
    let status = build.arg("--bins").status().expect("cargo runs");
    assert!(status.success(), "building the binaries of {packages:?} failed");
    target
}
