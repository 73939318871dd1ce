//! The `shop` binary as child processes: one copy of the saga under a unique topic prefix,
//! its roles started, killed (`kill -9`), restarted with the same `--instance`, frozen
//! (`SIGSTOP`) and resumed. Every child is killed when its [`Proc`] drops, so a failing
//! test leaves no process behind.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_bus::admin::{self, TopicSpec};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_shop::payments::PaymentEvent;
use herald_shop::{OrderEvent, OrderLine, OrderPlaced};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::checker::Rules;

/// Every `kill -9` of a shop process in this test binary.
pub static KILLS: AtomicUsize = AtomicUsize::new(0);

/// The public topics (unprefixed).
pub const PUBLIC: [&str; 3] = ["shop.orders", "shop.inventory", "shop.payments"];

/// A role of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Orders,
    Inventory,
    Payments,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Orders, Role::Inventory, Role::Payments];

    fn arg(self) -> &'static str {
        match self {
            Role::Orders => "orders",
            Role::Inventory => "inventory",
            Role::Payments => "payments",
        }
    }

    /// Partitions the role's main consumers read in all (three inputs of 6 partitions:
    /// orders reads shop.orders, shop.inventory, shop.payments; inventory its two per-order
    /// inputs and the per-SKU repartition topic; payments alike).
    pub const PARTITIONS: u64 = 18;
}

/// A uniform random number in `range`.
pub fn random<T: rand::distr::uniform::SampleUniform + PartialOrd>(range: std::ops::Range<T>) -> T {
    rand::rng().random_range(range)
}

/// One copy of the saga: its prefix, files, options and processes.
pub struct Shop {
    pub config: KafkaConfig,
    pub prefix: String,
    pub rules: Rules,
    dir: PathBuf,
    pub payment_timeout: Duration,
    /// Extra arguments for every process.
    pub extra: Vec<String>,
    publisher: Publisher,
}

impl Shop {
    /// A copy of the saga named after `name` on `config`'s cluster: its public topics
    /// created (6 partitions), its stock and credit files written.
    pub async fn new(config: KafkaConfig, name: &str, rules: Rules, payment_timeout: Duration) -> Shop {
        let prefix = format!("{}.", herald_testkit::unique(name));
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("test folder");
        std::fs::write(dir.join("stock.json"), serde_json::to_vec(&rules.stock).expect("json")).expect("stock file");
        std::fs::write(dir.join("credit.json"), serde_json::to_vec(&rules.credit).expect("json")).expect("credit file");
        let specs: Vec<TopicSpec> = PUBLIC.iter().map(|t| TopicSpec::new(format!("{prefix}{t}")).partitions(6)).collect();
        admin::create_topics(&config, &specs).await.expect("public topics");
        let publisher = Publisher::new(&config, PublisherOptions::new("/tests/shop-client")).expect("publisher");
        Shop { config, prefix, rules, dir, payment_timeout, extra: Vec::new(), publisher }
    }

    /// The last `lines` warnings and errors of each process's log (librdkafka's
    /// connection refusals left out), for a failed test's output.
    pub fn warnings(&self, lines: usize) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
        logs.sort();
        let mut out = String::new();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let picked: Vec<&str> = text.lines().filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("Connection refused")).collect();
            out.push_str(&format!("--- {} (last {} of {} warnings and errors)\n", log.display(), picked.len().min(lines), picked.len()));
            for line in &picked[picked.len().saturating_sub(lines)..] {
                out.push_str(&line.chars().take(400).collect::<String>());
                out.push('\n');
            }
        }
        out
    }

    /// The name of public topic `topic` in this copy.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    pub fn orders_topic(&self) -> Topic<OrderEvent> {
        Topic::named(self.topic("shop.orders"))
    }

    pub fn payments_topic(&self) -> Topic<PaymentEvent> {
        Topic::named(self.topic("shop.payments"))
    }

    /// Starts instance `instance` of `role`.
    pub fn start(&self, role: Role, instance: &str) -> Proc {
        let mut args: Vec<String> = vec![
            role.arg().into(),
            "--bootstrap".into(),
            self.config.bootstrap().into(),
            "--instance".into(),
            instance.into(),
            "--topic-prefix".into(),
            self.prefix.clone(),
            "--payment-timeout".into(),
            format!("{}ms", self.payment_timeout.as_millis()),
            "--stock".into(),
            self.dir.join("stock.json").display().to_string(),
            "--credit".into(),
            self.dir.join("credit.json").display().to_string(),
            "--default-credit".into(),
            self.rules.default_credit.to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let mut proc = Proc { role, instance: instance.to_owned(), args, child: None, http: None, log: self.dir.join(format!("{}-{instance}.log", role.arg())) };
        proc.spawn();
        proc
    }

    /// Starts `n` instances of every role (`<role>-<i>`).
    pub fn start_all(&self, n: usize) -> Vec<Proc> {
        Role::ALL.iter().flat_map(|role| (0..n).map(move |i| (role, i))).map(|(role, i)| self.start(*role, &format!("{}-{i}", role.arg()))).collect()
    }

    /// Publishes `placed` as a client would; returns its event id.
    pub async fn place(&self, placed: &OrderPlaced) -> String {
        self.publisher.publish(&self.orders_topic(), placed).await.expect("OrderPlaced published").id.to_string()
    }

    /// The publisher (to inject events).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// A random order `order_id` (see [`random_order`]).
    pub fn random_order(&self, order_id: &str) -> OrderPlaced {
        random_order(&self.rules, order_id)
    }

    /// Places random orders (`<name>-<n>`) every `pace` milliseconds until [`Flow::stop`].
    pub fn flow(&self, name: &str, pace: std::ops::Range<u64>) -> Flow {
        let (publisher, topic, rules, name) = (self.publisher.clone(), self.orders_topic(), self.rules.clone(), name.to_owned());
        let placed = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = {
            let (placed, stop) = (placed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.is_cancelled() {
                    let order = random_order(&rules, &format!("{name}-{n}"));
                    n += 1;
                    publisher.publish(&topic, &order).await.expect("OrderPlaced published");
                    placed.lock().expect("lock").push(order);
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(random(pace.clone()))) => {}
                    }
                }
            })
        };
        Flow { placed, stop, task: Some(task) }
    }
}

/// Orders placed in the background.
pub struct Flow {
    placed: Arc<Mutex<Vec<OrderPlaced>>>,
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Flow {
    /// How many were placed so far.
    pub fn count(&self) -> usize {
        self.placed.lock().expect("lock").len()
    }

    /// Those placed so far.
    pub fn placed(&self) -> Vec<OrderPlaced> {
        self.placed.lock().expect("lock").clone()
    }

    /// Stops placing; returns every order placed.
    pub async fn stop(mut self) -> Vec<OrderPlaced> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("flow task");
        }
        self.placed()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A random order `order_id`: 1–2 lines of the rules' SKUs (rarely an unknown one), 1–3
/// units each, for one of the rules' customers (or an unknown one, with the default credit).
pub fn random_order(rules: &Rules, order_id: &str) -> OrderPlaced {
    let mut skus: Vec<&String> = rules.stock.keys().collect();
    let mut customers: Vec<&String> = rules.credit.keys().collect();
    skus.sort();
    customers.sort();
    let lines: Vec<OrderLine> = (0..random(1..3))
        .map(|_| {
            let sku = if random(0..20) == 0 { "NOT-STOCKED".to_owned() } else { skus[random(0..skus.len())].clone() };
            OrderLine { sku, quantity: random(1..4), unit_price_cents: random(100..900) }
        })
        .collect();
    let customer = if random(0..5) == 0 { "walk-in".to_owned() } else { customers[random(0..customers.len())].clone() };
    order(order_id, &customer, lines)
}

impl Drop for Shop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // CI keeps only what the test printed: the warnings and errors of each process.
            eprintln!("{}", self.warnings(40));
        }
        if std::thread::panicking() || std::env::var_os("HERALD_KEEP_LOGS").is_some() {
            eprintln!("shop process logs of {} are in {}", self.prefix, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An order of `lines` for `customer`, its total the lines' sum.
pub fn order(order_id: &str, customer: &str, lines: Vec<OrderLine>) -> OrderPlaced {
    let total = lines.iter().map(|l| l.unit_price_cents * i64::from(l.quantity)).sum();
    OrderPlaced { order_id: order_id.into(), customer_id: customer.into(), total_cents: total, currency: "EUR".into(), lines, note: None, placed_at: None }
}

/// A line of `quantity` units of `sku` at `price` cents.
pub fn line(sku: &str, quantity: i32, price: i64) -> OrderLine {
    OrderLine { sku: sku.into(), quantity, unit_price_cents: price }
}

/// One shop process (restartable). Killed on drop.
pub struct Proc {
    pub role: Role,
    pub instance: String,
    args: Vec<String>,
    child: Option<Child>,
    http: Option<SocketAddr>,
    log: PathBuf,
}

impl Proc {
    fn spawn(&mut self) {
        let http: SocketAddr = ([127, 0, 0, 1], herald_testkit::free_port()).into();
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(&self.args)
            .arg("--http")
            .arg(http.to_string())
            .env("RUST_LOG", "info,rdkafka=warn")
            .env_remove("SHOP_TOPIC_PREFIX")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("shop runs");
        self.child = Some(child);
        self.http = Some(http);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// `kill -9`, counted in [`KILLS`].
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            KILLS.fetch_add(1, Ordering::Relaxed);
        }
        self.http = None;
    }

    /// Starts it again with the same arguments (the same `--instance`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running process");
        self.spawn();
    }

    /// `SIGTERM` and wait for it to end (an orderly stop); panics if it does not end
    /// within `within` or ends with a failure.
    pub async fn stop(&mut self, within: Duration) {
        let Some(mut child) = self.child.take() else { return };
        signal(child.id(), "-TERM");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "{} {} ended with {status} after SIGTERM (log: {})", self.role.arg(), self.instance, self.log.display());
                return;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} {} did not stop within {within:?} of SIGTERM", self.role.arg(), self.instance);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `SIGSTOP`.
    pub fn freeze(&self) {
        signal(self.pid(), "-STOP");
    }

    /// `SIGCONT`.
    pub fn thaw(&self) {
        signal(self.pid(), "-CONT");
    }

    /// Whether the process is running (it did not exit by itself).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Its `/health` report (`None` when it does not answer).
    pub async fn health(&self) -> Option<serde_json::Value> {
        let addr = self.http?;
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").await.ok()?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.ok()?;
            let text = String::from_utf8(response).ok()?;
            let (_, body) = text.split_once("\r\n\r\n")?;
            serde_json::from_str(body).ok()
        };
        tokio::time::timeout(Duration::from_secs(2), fetch).await.ok().flatten()
    }

    /// Partitions its engines' main consumers hold now (`None` when it does not answer).
    pub async fn assigned(&self) -> Option<u64> {
        let health = self.health().await?;
        Some(health["details"].as_array()?.iter().filter_map(|engine| engine["consumer"]["assigned_partitions"].as_u64()).sum())
    }

    /// A sum over its engines of a counter of their health report (`transactions_aborted`, ...).
    pub async fn counter(&self, name: &str) -> Option<u64> {
        let health = self.health().await?;
        Some(health["details"].as_array()?.iter().filter_map(|engine| engine[name].as_u64()).sum())
    }

    /// How many lines of its log (all its runs) contain `pattern`.
    pub fn log_count(&self, pattern: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().filter(|l| l.contains(pattern)).count()
    }

    /// Whether one of its engines has a transaction open now, opened less than `within` ago.
    pub async fn transaction_open_within(&self, within: Duration) -> bool {
        let Some(health) = self.health().await else { return false };
        health["details"].as_array().is_some_and(|engines| engines.iter().any(|e| e["open_transaction_age_ms"].as_u64().is_some_and(|age| age < within.as_millis() as u64)))
    }

    /// The tail of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Default credit for customers not in the credit file.
pub fn rules(stock: &[(&str, i64)], credit: &[(&str, i64)], default_credit: i64) -> Rules {
    Rules {
        stock: stock.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect::<HashMap<_, _>>(),
        credit: credit.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect::<HashMap<_, _>>(),
        default_credit,
    }
}
