//! The gateway's throughput and latency at `acks=all`, against the Publisher's own rate for
//! the same events in the same run.
//!
//! ```sh
//! apt-get install wrk   # the HTTP load generator (or --client reqwest, in-process)
//! cargo run --release -p herald-gateway --example bench -- \
//!     [--bootstrap 127.0.0.1:9092] [--requests 20000] [--concurrency 64] [--rounds 2] \
//!     [--with-keys] [--linger-ms N] [--client wrk|reqwest]
//! ```
//!
//! Each round runs both, on fresh topics of 6 partitions, with the same concurrency (that
//! many callers, each sending its next event when the last was acknowledged). Each caller
//! first sends one event untimed (the producer's metadata for the fresh topic, the HTTP
//! connection), and the clock starts when all have:
//! - **publisher**: `Publisher::publish` of typed `OrderPlaced` events (herald-shop's type),
//!   each awaited until the broker acknowledged it;
//! - **gateway**: an in-process gateway with the shop's place-order route, HTTP/1.1
//!   keep-alive clients POSTing the same orders as JSON; each `202` comes after the ack.
//!   The clients are [wrk](https://github.com/wg/wrk) (one thread, one connection per
//!   caller, a Lua script giving each request its own order id), a separate process as a
//!   load generator is in production, so this process's CPU is the gateway's alone; a warm-up run
//!   of one second first, then the timed one of `--seconds` (5). After it the bench
//!   counts the topic's records: every `202` must be there (and at most one in-flight
//!   request per caller more). `--client reqwest` runs the clients in this process instead
//!   (reqwest, a JSON value built per request), which costs the gateway side their CPU too.
//!
//! Prints events/s, p50/p99 latency and CPU per event (this process's, and the whole
//! machine's, broker included) per side and round, and the gateway's share of the
//! publisher's rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_bench::machine::CpuTime;
use herald_bus::admin::{self, TopicSpec};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_gateway::{Config, Gateway, Options};
use herald_shop::orders::{OrderEvent, OrderPlaced};

#[derive(clap::Parser)]
#[command(about = "The gateway's rate at acks=all against the publisher's, in one run")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Events per side and round (the publisher side; wrk runs for `--seconds`).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Callers per side, each sending its next event when the last was acknowledged.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Each gateway request carries an `Idempotency-Key` of its own (claimed on the
    /// idempotency topic before the event is published).
    #[arg(long = "with-keys")]
    keys: bool,
    /// `linger.ms` for both sides' producers (default: each side's own default).
    #[arg(long)]
    linger_ms: Option<String>,
    /// The gateway side's HTTP clients: `wrk` (a separate process) or `reqwest` (in this one).
    #[arg(long, value_enum, default_value = "wrk")]
    client: Client,
    /// How long wrk's timed run lasts, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Client {
    Wrk,
    Reqwest,
}

/// Rate, latency and CPU of one side of one round.
struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// CPU seconds over the timed run (this process's, and the machine's) and its events.
    cpu: CpuTime,
    events: usize,
}

impl Run {
    fn new(mut latencies: Vec<Duration>, elapsed: Duration, cpu: CpuTime) -> Run {
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        Run { per_second: latencies.len() as f64 / elapsed.as_secs_f64(), p50: at(0.50), p99: at(0.99), cpu, events: latencies.len() }
    }

    /// Microseconds of CPU per event: this process's, the machine's.
    fn cpu_per_event(&self) -> (f64, f64) {
        let per = |seconds: f64| seconds * 1e6 / self.events.max(1) as f64;
        (per(self.cpu.process), per(self.cpu.machine))
    }
}

async fn topic(kafka: &KafkaConfig, side: &str) -> String {
    let name = format!("bench.gateway.{side}.{}", uuid::Uuid::new_v4().simple());
    admin::create_topics(kafka, &[TopicSpec::new(&name).partitions(6)]).await.expect("create topic");
    name
}

async fn publisher_round(kafka: &KafkaConfig, args: &Args) -> Run {
    let name: &'static str = Box::leak(topic(kafka, "publisher").await.into_boxed_str());
    let publisher = Publisher::new(kafka, PublisherOptions::new("/bench/publisher")).expect("publisher");
    let per_caller = args.requests / args.concurrency;
    let warm = Arc::new(tokio::sync::Barrier::new(args.concurrency + 1));
    let mut callers = Vec::new();
    for caller in 0..args.concurrency {
        let (publisher, warm) = (publisher.clone(), warm.clone());
        callers.push(tokio::spawn(async move {
            let orders: Topic<OrderEvent> = Topic::new(name);
            let warm_up = OrderPlaced::example(&format!("warm-{caller}"), &format!("c-{caller}"), 2500);
            publisher.publish(&orders, &warm_up).await.expect("published");
            warm.wait().await;
            let mut latencies = Vec::with_capacity(per_caller);
            for n in 0..per_caller {
                let event = OrderPlaced::example(&format!("o-{caller}-{n}"), &format!("c-{caller}"), 2500);
                let t = Instant::now();
                publisher.publish(&orders, &event).await.expect("published");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    warm.wait().await;
    let (started, cpu) = (Instant::now(), CpuTime::now());
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.expect("caller"));
    }
    let (elapsed, cpu) = (started.elapsed(), CpuTime::now().since(cpu));
    publisher.flush(Duration::from_secs(10)).await.expect("flush");
    Run::new(latencies, elapsed, cpu)
}

async fn gateway_round(kafka: &KafkaConfig, args: &Args) -> Run {
    let name = topic(kafka, "gateway").await;
    let text = format!(
        r#"[gateway]
schemas = "{}/../../schemas"
[idempotency]
topic = "bench.gateway.idempotency.{}"
[[route]]
name = "place-order"
method = "POST"
path = "/orders"
event = "shop.orders.OrderPlaced"
topic = "{name}"
key = {{ body = "order_id" }}
fill = {{ order_id = "uuid7", placed_at = "now" }}
"#,
        env!("CARGO_MANIFEST_DIR"),
        uuid::Uuid::new_v4().simple()
    );
    let gateway = Gateway::new(Config::parse(&text).expect("config"), kafka, Options::default()).await.expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let url = format!("http://{}/orders", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    let run = match args.client {
        Client::Wrk => wrk(kafka, &name, &url, args).await,
        Client::Reqwest => reqwest_clients(&url, args).await,
    };
    let _ = stop.send(());
    server.await.expect("server").expect("serve");
    run
}

/// The gateway side's load from wrk, a separate process: a one-second warm-up, then the
/// timed run; then every `202` is checked against the topic's records.
async fn wrk(kafka: &KafkaConfig, topic: &str, url: &str, args: &Args) -> Run {
    let script = std::env::temp_dir().join(format!("herald-bench-{}.lua", uuid::Uuid::new_v4().simple()));
    std::fs::write(&script, WRK_SCRIPT.replace("KEYS", if args.keys { "true" } else { "false" })).expect("write the wrk script");
    let run = |seconds: u64, prefix: &'static str| {
        let mut command = tokio::process::Command::new("wrk");
        command.args(["-t1", &format!("-c{}", args.concurrency), &format!("-d{seconds}s"), "--timeout", "10s", "-s"]).arg(&script).arg(url);
        command.env("HERALD_ORDER_PREFIX", format!("{prefix}-{}-", uuid::Uuid::new_v4().simple()));
        async move {
            let output = command.output().await.unwrap_or_else(|e| panic!("wrk: {e} (apt-get install wrk, or --client reqwest)"));
            let stdout = String::from_utf8_lossy(&output.stdout);
            let line = stdout.lines().find_map(|l| l.strip_prefix("herald-wrk ")).unwrap_or_else(|| panic!("wrk printed no summary: {stdout}{}", String::from_utf8_lossy(&output.stderr)));
            let n: Vec<u64> = line.split_whitespace().map(|v| v.parse().expect("a count")).collect();
            let [requests, micros, connect, read, write, status, timeout, p50, p99] = n[..] else { panic!("wrk summary: {line}") };
            assert_eq!((connect, read, write, status, timeout), (0, 0, 0, 0, 0), "wrk saw errors (connect, read, write, non-2xx, timeout)");
            (requests, Duration::from_micros(micros), Duration::from_micros(p50), Duration::from_micros(p99))
        }
    };
    let (warm, ..) = run(1, "warm").await;
    let cpu = CpuTime::now();
    let (requests, elapsed, p50, p99) = run(args.seconds, "o").await;
    let cpu = CpuTime::now().since(cpu);
    let _ = std::fs::remove_file(&script);
    // wrk counts answers; a request in flight when it stopped may have been written too.
    let written = herald_testkit::record_count(kafka, topic).await as u64;
    let answered = warm + requests;
    assert!(
        (answered..=answered + 2 * args.concurrency as u64).contains(&written),
        "{answered} requests answered 202, {written} records in {topic}"
    );
    Run { per_second: requests as f64 / elapsed.as_secs_f64(), p50, p99, cpu, events: requests as usize }
}

/// Each request its own order id (and, with `--with-keys`, its own `Idempotency-Key`); a
/// summary line at the end (latencies in microseconds).
const WRK_SCRIPT: &str = r#"
local prefix = os.getenv("HERALD_ORDER_PREFIX")
local keys = KEYS
local n = 0
request = function()
  n = n + 1
  local id = prefix .. n
  local headers = { ["Content-Type"] = "application/json" }
  if keys then headers["Idempotency-Key"] = "key-" .. id end
  local body = '{"order_id":"' .. id .. '","customer_id":"c-1","total_cents":2500,"currency":"EUR",'
    .. '"lines":[{"sku":"SKU-1","quantity":1,"unit_price_cents":2500}]}'
  return wrk.format("POST", nil, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("herald-wrk %d %d %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"#;

/// The gateway side's load from reqwest clients in this process (a JSON value built per
/// request), which share its CPU with the gateway.
async fn reqwest_clients(url: &str, args: &Args) -> Run {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build().expect("client");
    let per_caller = args.requests / args.concurrency;
    let url = Arc::new(url.to_owned());
    let warm = Arc::new(tokio::sync::Barrier::new(args.concurrency + 1));
    let keys = args.keys;
    let mut callers = Vec::new();
    for caller in 0..args.concurrency {
        let (http, url, warm) = (http.clone(), url.clone(), warm.clone());
        callers.push(tokio::spawn(async move {
            let post = |order_id: String| {
                let body = serde_json::json!({
                    "order_id": order_id, "customer_id": format!("c-{caller}"), "total_cents": 2500, "currency": "EUR",
                    "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 2500}]
                });
                let mut request = http.post(url.as_str()).json(&body);
                if keys {
                    request = request.header("idempotency-key", format!("key-{order_id}"));
                }
                let request = request.send();
                async move {
                    let response = request.await.expect("request");
                    assert_eq!(response.status(), 202, "{:?}", response.text().await);
                    let _ = response.bytes().await;
                }
            };
            post(format!("warm-{caller}")).await;
            warm.wait().await;
            let mut latencies = Vec::with_capacity(per_caller);
            for n in 0..per_caller {
                let t = Instant::now();
                post(format!("o-{caller}-{n}")).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    warm.wait().await;
    let (started, cpu) = (Instant::now(), CpuTime::now());
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.expect("caller"));
    }
    Run::new(latencies, started.elapsed(), CpuTime::now().since(cpu))
}

/// jemalloc, not glibc's malloc: measured in BENCHMARKS.md ("Aggregates: the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let kafka = match &args.linger_ms {
        Some(ms) => KafkaConfig::new(&args.bootstrap).set("linger.ms", ms.as_str()),
        None => KafkaConfig::new(&args.bootstrap),
    };
    let with_keys = if args.keys { ", each gateway request with an Idempotency-Key" } else { "" };
    let linger = args.linger_ms.as_deref().map(|ms| format!(", linger.ms={ms} on both sides")).unwrap_or_default();
    println!("{} events per side and round, {} callers, acks=all, HTTP/1.1 keep-alive{with_keys}{linger}", args.requests, args.concurrency);
    let client = if args.client == Client::Wrk { "wrk, a separate process" } else { "reqwest, in this process" };
    println!("gateway side's clients: {client}; CPU per event: this process's, and the machine's (broker and clients included)");
    println!("{:<6} {:<10} {:>10} {:>10} {:>10} {:>12} {:>12}", "round", "side", "events/s", "p50 ms", "p99 ms", "cpu µs", "machine µs");
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        // Alternate which side goes first, so neither always gets the warmer broker.
        let (publisher, gateway) = if round % 2 == 1 {
            let p = publisher_round(&kafka, &args).await;
            (p, gateway_round(&kafka, &args).await)
        } else {
            let g = gateway_round(&kafka, &args).await;
            (publisher_round(&kafka, &args).await, g)
        };
        for (side, run) in [("publisher", &publisher), ("gateway", &gateway)] {
            let (process, machine) = run.cpu_per_event();
            println!("{round:<6} {side:<10} {:>10.0} {:>10.2} {:>10.2} {process:>12.1} {machine:>12.1}", run.per_second, ms(run.p50), ms(run.p99));
        }
        ratios.push(gateway.per_second / publisher.per_second);
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[(sorted.len() - 1) / 2] + sorted[sorted.len() / 2]) / 2.0;
    println!("gateway / publisher rate, median of rounds: {median:.2} (per round: {})", ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
