//! The gateway's throughput and latency at `acks=all`, against the Publisher's own rate for
//! the same events in the same run.
//!
//! ```sh
//! cargo run --release -p herald-gateway --example bench -- \
//!     [--bootstrap 127.0.0.1:9092] [--requests 20000] [--concurrency 64] [--rounds 2] [--with-keys] [--linger-ms N]
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
//!
//! Prints events/s and p50/p99 latency per side and round, and the gateway's share of the
//! publisher's rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_bus::admin::{self, TopicSpec};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_gateway::{Config, Gateway, Options};
use herald_shop::orders::{OrderEvent, OrderPlaced};

struct Args {
    bootstrap: String,
    requests: usize,
    concurrency: usize,
    rounds: usize,
    /// Each gateway request carries an `Idempotency-Key` of its own (claimed on the
    /// idempotency topic before the event is published).
    keys: bool,
    /// `linger.ms` for both sides' producers (default: each side's own default).
    linger_ms: Option<String>,
}

fn args() -> Args {
    let mut args = Args { bootstrap: "127.0.0.1:9092".into(), requests: 20_000, concurrency: 64, rounds: 2, keys: false, linger_ms: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--with-keys" {
            args.keys = true;
            continue;
        }
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--bootstrap" => args.bootstrap = value,
            "--requests" => args.requests = value.parse().expect("--requests N"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency N"),
            "--rounds" => args.rounds = value.parse().expect("--rounds N"),
            "--linger-ms" => args.linger_ms = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// Rate and latency of one side of one round.
struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(mut latencies: Vec<Duration>, elapsed: Duration) -> Run {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run { per_second: latencies.len() as f64 / elapsed.as_secs_f64(), p50: at(0.50), p99: at(0.99) }
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
    let started = Instant::now();
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.expect("caller"));
    }
    let elapsed = started.elapsed();
    publisher.flush(Duration::from_secs(10)).await.expect("flush");
    summarize(latencies, elapsed)
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
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build().expect("client");
    let per_caller = args.requests / args.concurrency;
    let url = Arc::new(url);
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
    let started = Instant::now();
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.expect("caller"));
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    server.await.expect("server").expect("serve");
    summarize(latencies, elapsed)
}

#[tokio::main]
async fn main() {
    let args = args();
    let kafka = match &args.linger_ms {
        Some(ms) => KafkaConfig::new(&args.bootstrap).set("linger.ms", ms.as_str()),
        None => KafkaConfig::new(&args.bootstrap),
    };
    let with_keys = if args.keys { ", each gateway request with an Idempotency-Key" } else { "" };
    let linger = args.linger_ms.as_deref().map(|ms| format!(", linger.ms={ms} on both sides")).unwrap_or_default();
    println!("{} events per side and round, {} callers, acks=all, HTTP/1.1 keep-alive{with_keys}{linger}", args.requests, args.concurrency);
    println!("{:<6} {:<10} {:>10} {:>10} {:>10}", "round", "side", "events/s", "p50 ms", "p99 ms");
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
            println!("{round:<6} {side:<10} {:>10.0} {:>10.2} {:>10.2}", run.per_second, ms(run.p50), ms(run.p99));
        }
        ratios.push(gateway.per_second / publisher.per_second);
    }
    let ratio = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!("gateway / publisher rate: {ratio:.2} (per round: {})", ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
