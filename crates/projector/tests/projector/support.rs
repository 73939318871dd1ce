//! Fixtures: stores, the example process, publishing, the reference fold.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_bus::codec::SingleObject;
use herald_bus::publisher::Record;
use herald_bus::{EventFamily, KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_projector::{store, Store};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderEvent, OrderPlaced};
use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const DEADLINE: Duration = Duration::from_secs(120);

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh store for one test: a new SQLite file, or a new PostgreSQL database. `None`
/// (with the reason printed) only for PostgreSQL outside CI without
/// `HERALD_TEST_POSTGRES_URL`; in CI its absence fails the test.
pub async fn fresh_store(backend: Backend) -> Option<String> {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join("herald-projector-tests");
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join(format!("{}.db", herald_testkit::unique("view")));
            Some(format!("sqlite:{}", path.display()))
        }
        Backend::Postgres => herald_testkit::fresh_postgres("herald_projector").await,
    }
}

/// The `order_totals` example built with crash points (`order_totals_crash`; built here if
/// missing).
pub fn example_binary() -> PathBuf {
    // The example built with crash points (the tests set HERALD_PROJECTOR_CRASH_AT).
    herald_testkit::example_binary_with("herald-projector", "order_totals_crash", &["crash-points"])
}

/// A running `order_totals` process.
pub struct Proc {
    pub child: Child,
    pub http: String,
    pub log: PathBuf,
}

/// Settings for [`start`].
#[derive(Clone)]
pub struct Opts {
    pub topic: String,
    pub group: String,
    pub store: String,
    pub max_batch: usize,
    pub crash_at: Option<String>,
    pub extra: Vec<String>,
    pub args: Vec<String>,
}

impl Opts {
    pub fn new(topic: &str, group: &str, store: &str) -> Self {
        Opts { topic: topic.into(), group: group.into(), store: store.into(), max_batch: 50, crash_at: None, extra: Vec::new(), args: Vec::new() }
    }
}

/// Starts the example and waits until it serves HTTP.
pub async fn start(opts: &Opts) -> Proc {
    let log = std::env::temp_dir().join("herald-projector-tests").join(format!("{}.log", herald_testkit::unique("proc")));
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(example_binary());
    cmd.args(["--topic", &opts.topic, "--group", &opts.group, "--store", &opts.store, "--max-batch", &opts.max_batch.to_string()])
        .args(["--max-attempts", "3", "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"])
        .args(opts.extra.iter().flat_map(|x| ["-X".to_owned(), x.clone()]))
        .args(&opts.args)
        .env("RUST_LOG", "warn,herald_projector=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        cmd.env("KAFKA_BOOTSTRAP_SERVERS", b);
    }
    match &opts.crash_at {
        Some(at) => cmd.env("HERALD_PROJECTOR_CRASH_AT", at),
        None => cmd.env_remove("HERALD_PROJECTOR_CRASH_AT"),
    };
    let mut child = cmd.spawn().expect("spawn order_totals");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let http = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix("http: ") {
                return Some(addr.to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("order_totals did not start; log: {}\n{}", log.display(), std::fs::read_to_string(&log).unwrap_or_default()));
    Proc { child, http, log }
}

impl Proc {
    /// Its live status.
    pub async fn status(&self) -> Option<herald_projector::Status> {
        let r = reqwest::get(format!("http://{}/status", self.http)).await.ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        Some(herald_projector::Status {
            applied_total: v["applied_total"].as_u64().unwrap_or(0),
            batches_total: v["batches_total"].as_u64().unwrap_or(0),
            dead_lettered_total: v["dead_lettered_total"].as_u64().unwrap_or(0),
            total_lag: v["total_lag"].as_i64().unwrap_or(0),
            ..Default::default()
        })
    }

    /// Waits until the process exits by itself (a crash point); panics after `timeout`.
    pub async fn wait_crash(mut self, timeout: Duration) -> bool {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => !status.success(),
            _ => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                false
            }
        }
    }

    /// SIGKILL.
    pub async fn kill9(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, and checks that it stops cleanly.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("pid");
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let status = tokio::time::timeout(DEADLINE, self.child.wait()).await.expect("stops after SIGTERM").expect("wait");
        assert!(status.success(), "order_totals exited with {status} after SIGTERM; log: {}\n{}", self.log.display(), tail(&self.log));
    }
}

pub fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn publisher(config: &KafkaConfig) -> Publisher {
    Publisher::new(config, PublisherOptions::new("/herald/projector-tests")).expect("publisher")
}

/// Publishes a random stream of `n` order events over `customers` customers: placements,
/// confirmations, cancellations (of known, unknown and already cancelled orders) and
/// repeated placements. Order ids are drawn from `ids`, so later calls can cancel earlier
/// orders.
pub async fn publish_orders(publisher: &Publisher, topic: &Topic<OrderEvent>, n: usize, ids: std::ops::Range<u32>, seed: u64) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut events: Vec<OrderEvent> = Vec::with_capacity(n);
    for _ in 0..n {
        let id = format!("o-{}", rng.random_range(ids.clone()));
        let event = match rng.random_range(0..10) {
            0..=5 => OrderEvent::Placed(OrderPlaced::example(&id, &format!("c-{}", rng.random_range(0..40)), rng.random_range(1..10_000))),
            6 => OrderEvent::Confirmed(OrderConfirmed::example(&id, "p")),
            _ => OrderEvent::Cancelled(OrderCancelled::example(&id, "changed mind", None)),
        };
        events.push(event);
    }
    let mut pending = Vec::new();
    for e in &events {
        let publisher = publisher.clone();
        let topic = topic.clone();
        let fut = async move {
            match e {
                OrderEvent::Placed(p) => publisher.publish(&topic, p).await,
                OrderEvent::Confirmed(c) => publisher.publish(&topic, c).await,
                OrderEvent::Cancelled(c) => publisher.publish(&topic, c).await,
            }
        };
        pending.push(fut);
        if pending.len() >= 500 {
            for r in futures::future::join_all(pending.drain(..)).await {
                r.expect("published");
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r.expect("published");
    }
}

/// Publishes poison records: `garbage` undecodable payloads and `negative` orders with a
/// negative total (a permanent projection error).
pub async fn publish_poison(publisher: &Publisher, topic: &Topic<OrderEvent>, garbage: usize, negative: usize, tag: &str) {
    for i in 0..garbage {
        let record = Record {
            topic: topic.name().to_owned(),
            key: Some(format!("poison-{tag}-{i}").into_bytes()),
            payload: Some(b"{\"not\":\"avro\"}".to_vec()),
            headers: rdkafka::message::OwnedHeaders::new(),
            partition: None,
        };
        publisher.send_record(record).await.expect("garbage published");
    }
    for i in 0..negative {
        publisher.publish(topic, &OrderPlaced::example(&format!("neg-{tag}-{i}"), "c-neg", -5)).await.expect("published");
    }
}

/// customer → (orders, total_cents)
pub type View = BTreeMap<String, (i64, i64)>;

/// The reference fold of the whole topic, computed independently of the projector:
/// every record decoded here and folded per partition in offset order. Poison records
/// (undecodable, negative totals) are left out. Returns the view and the poison count.
pub async fn fold_topic(config: &KafkaConfig, topic: &str) -> (View, usize) {
    fold_topic_where(config, topic, |_, _| true).await
}

/// [`fold_topic`] over the records for which `keep(partition, offset)` holds.
pub async fn fold_topic_where(config: &KafkaConfig, topic: &str, keep: impl Fn(i32, i64) -> bool) -> (View, usize) {
    let count = herald_testkit::record_count(config, topic).await as usize;
    let mut records = herald_testkit::read_all(config, topic, count, DEADLINE).await;
    assert_eq!(records.len(), count, "read the whole topic");
    records.sort_by_key(|m| (rdkafka::Message::partition(m), rdkafka::Message::offset(m)));
    let codec = SingleObject::new(OrderEvent::schemas().clone());
    let mut fold = Fold::default();
    let mut poison = 0;
    for msg in records.iter().filter(|m| keep(rdkafka::Message::partition(*m), rdkafka::Message::offset(*m))) {
        let Ok(envelope) = herald_bus::consumer::decode::<OrderEvent>(&codec, msg).await else {
            poison += 1;
            continue;
        };
        if !fold.apply(&envelope.event) {
            poison += 1;
        }
    }
    let view = fold.view;
    (view, poison)
}

/// The reference fold of `order_totals`, written here independently of the projection:
/// orders by id (customer, total, live) and the view.
#[derive(Default)]
pub struct Fold {
    pub orders: BTreeMap<String, (String, i64, bool)>,
    pub view: View,
}

impl Fold {
    /// Folds one event; false for a poison event (a negative total), which changes nothing.
    pub fn apply(&mut self, event: &OrderEvent) -> bool {
        match event {
            OrderEvent::Placed(p) if p.total_cents < 0 => return false,
            OrderEvent::Placed(p) => {
                if !self.orders.contains_key(&p.order_id) {
                    self.orders.insert(p.order_id.clone(), (p.customer_id.clone(), p.total_cents, true));
                    let v = self.view.entry(p.customer_id.clone()).or_default();
                    v.0 += 1;
                    v.1 += p.total_cents;
                }
            }
            OrderEvent::Cancelled(c) => {
                if let Some((customer, total, live)) = self.orders.get_mut(&c.order_id)
                    && *live
                {
                    *live = false;
                    let v = self.view.entry(customer.clone()).or_default();
                    v.0 -= 1;
                    v.1 -= *total;
                }
            }
            OrderEvent::Confirmed(_) => {}
        }
        true
    }
}

/// The projector's view, read from the store (customers with no live order included as
/// zeros are dropped, like the fold's).
pub async fn read_view(store_url: &str) -> View {
    read_table(store_url, "customer_totals").await
}

/// Reads `table` (a view or a versioned table such as `customer_totals__v2`).
pub async fn read_table(store_url: &str, table: &str) -> View {
    let store = store::open(store_url).expect("store");
    let sql = format!("SELECT customer_id, orders, total_cents FROM {table}");
    tokio::task::spawn_blocking(move || {
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.read().expect("read");
        let rows = tx.query(&sql, &[]).expect("query view");
        rows.iter().map(|r| (r.text(0).expect("id").to_owned(), (r.int(1).expect("orders"), r.int(2).expect("total")))).collect()
    })
    .await
    .expect("read view")
}

/// Drops zero entries so a view and a fold compare by content.
pub fn non_zero(view: &View) -> View {
    view.iter().filter(|(_, v)| **v != (0, 0)).map(|(k, v)| (k.clone(), *v)).collect()
}

/// Dead letters recorded in the store: (partition, offset, stage, reason).
pub async fn stored_dead_letters(store_url: &str) -> Vec<(i32, i64, String, String)> {
    let store: Arc<dyn Store> = store::open(store_url).expect("store");
    tokio::task::spawn_blocking(move || {
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.read().expect("read");
        let rows = tx.query("SELECT partition_id, record_offset, stage, reason FROM herald_dead_letters ORDER BY 1, 2", &[]).expect("query");
        rows.iter()
            .map(|r| (r.int(0).expect("p") as i32, r.int(1).expect("o"), r.text(2).expect("s").to_owned(), r.text(3).expect("r").to_owned()))
            .collect()
    })
    .await
    .expect("dead letters")
}

/// Waits until the stored positions reach the end of every partition.
pub async fn wait_caught_up(config: &KafkaConfig, store_url: &str, topic: &str, what: &str) {
    let store = store::open(store_url).expect("store");
    let started = Instant::now();
    loop {
        if let Ok(status) = herald_projector::status::read(store.clone(), config, "order_totals", None, topic).await
            && status.total_lag == 0
            && status.partitions.iter().all(|p| p.position.is_some() || p.end_offset == Some(0))
        {
            return;
        }
        assert!(started.elapsed() < DEADLINE * 2, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads one key through the example's HTTP view endpoint.
pub async fn http_view(proc: &Proc, key: &str) -> Option<(i64, i64)> {
    let r = reqwest::get(format!("http://{}/views/customer_totals/{key}", proc.http)).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    Some((v["orders"].as_i64()?, v["total_cents"].as_i64()?))
}
