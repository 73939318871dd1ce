//! The reference saga's end-to-end latency: the three roles of the `shop` binary (one
//! process each), orders published at a fixed rate, and a read_committed reader of
//! `shop.orders` that takes, for each order, the time from its `OrderPlaced` record's
//! timestamp to the moment its terminal event (`OrderConfirmed` / `OrderCancelled`)
//! becomes visible to it. Same machine, same clock.
//!
//! The shop's topics have fixed names, so run this against a broker of its own
//! (`KAFKA_PORT=19092 scripts/kafka start`), not one other shop runs use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_bus::{KafkaConfig, Metadata, Publisher, PublisherOptions};
use herald_shop::{OrderLine, OrderPlaced};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::process::{Child, Command};

/// Options of `saga`.
#[derive(Debug, Clone, clap::Args)]
pub struct SagaArgs {
    /// Kafka bootstrap servers (a broker of its own: the shop's topics have fixed names).
    #[arg(long, default_value = "127.0.0.1:19092")]
    pub bootstrap: String,
    /// Orders per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Seconds of orders.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// The `shop` binary (default: next to this one).
    #[arg(long)]
    pub shop: Option<PathBuf>,
    /// Every this many orders asks for more than its customer's credit (declined, so
    /// cancelled and compensated); 0: none.
    #[arg(long, default_value_t = 0)]
    pub decline_every: u64,
    /// Run the roles as `react shop-role --pipeline` (the same participants, engines
    /// pipelined) instead of the `shop` binary.
    #[arg(long)]
    pub pipeline: bool,
}

const SKUS: u64 = 50;

fn order(i: u64, run: &str, decline: bool) -> OrderPlaced {
    let sku = format!("SKU-{}", i % SKUS);
    let mut o = OrderPlaced::example(&format!("{run}-{i}"), &format!("customer-{}", i % 1000), 100);
    o.lines = vec![OrderLine { sku, quantity: 1, unit_price_cents: 100 }];
    if decline {
        o.total_cents = 1_000_000_000_000;
        o.lines[0].unit_price_cents = o.total_cents;
    }
    o
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs the saga benchmark and prints p50/p90/p99/max.
pub async fn run(args: SagaArgs) -> anyhow::Result<()> {
    let shop = match &args.shop {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("shop"),
    };
    let dir = std::env::temp_dir().join(format!("herald-saga-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stock: serde_json::Map<String, serde_json::Value> = (0..SKUS).map(|s| (format!("SKU-{s}"), serde_json::json!(1_000_000_000))).collect();
    let stock_file = dir.join("stock.json");
    std::fs::write(&stock_file, serde_json::Value::Object(stock).to_string())?;
    let me = std::env::current_exe()?;
    let spawn = |role: &str, extra: &[&str]| -> std::io::Result<Child> {
        let mut command = if args.pipeline {
            let mut c = Command::new(&me);
            c.args(["shop-role", role, "--pipeline", "--skus", &SKUS.to_string(), "--bootstrap", &args.bootstrap]);
            c
        } else {
            let mut c = Command::new(&shop);
            c.arg(role).args(["--bootstrap", &args.bootstrap, "--instance", &format!("bench-{role}")]).args(extra);
            c
        };
        command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
    };
    let stock_arg = stock_file.to_string_lossy().into_owned();
    let mut roles = vec![
        ("orders", spawn("orders", &[])?),
        ("inventory", spawn("inventory", &["--stock", &stock_arg])?),
        ("payments", spawn("payments", &["--default-credit", "1000000000"])?),
    ];
    let config = KafkaConfig::new(&args.bootstrap);
    // Wait for the roles to create the topics.
    let deadline = Instant::now() + Duration::from_secs(60);
    while herald_bus::admin::partition_count(&config, herald_shop::orders::ORDERS.name()).await.ok().flatten().is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the shop's topics did not appear");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "herald.bench.saga.reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition_offset(herald_shop::orders::ORDERS.name(), p, Offset::End)?;
    }
    reader.assign(&tpl)?;
    let publisher = Publisher::new(&config, PublisherOptions::new("/herald/bench/saga"))?;
    let run_id = format!("saga-{}", std::process::id());
    // Warm up: one order, until its terminal event shows (the roles joined and restored).
    let warm = order(u64::MAX / 2, &run_id, false);
    publisher.publish(&herald_shop::orders::ORDERS, &warm).await?;
    let (placed_tx, placed_rx) = std::sync::mpsc::channel::<()>();
    let total = args.rate * args.seconds;
    let reading = tokio::task::spawn_blocking(move || -> Result<(Vec<f64>, u64, u64), String> {
        let mut placed: HashMap<String, i64> = HashMap::new();
        let mut latencies = Vec::new();
        let (mut confirmed, mut cancelled) = (0, 0);
        let mut warmed = false;
        let deadline = Instant::now() + Duration::from_secs(600);
        while latencies.len() < total as usize {
            if Instant::now() > deadline {
                return Err(format!("{} of {total} orders finished in time", latencies.len()));
            }
            let Some(m) = reader.poll(Duration::from_millis(20)) else { continue };
            let m = m.map_err(|e| e.to_string())?;
            let seen = now_ms();
            let meta = Metadata::from_headers(m.headers(), m.key(), "?").map_err(|e| e.to_string())?;
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            match meta.event_type.as_str() {
                "shop.orders.OrderPlaced" => {
                    placed.insert(key, m.timestamp().to_millis().unwrap_or(seen));
                }
                t @ ("shop.orders.OrderConfirmed" | "shop.orders.OrderCancelled") => {
                    if !warmed {
                        warmed = true;
                        let _ = placed_tx.send(());
                        continue;
                    }
                    if let Some(at) = placed.remove(&key) {
                        latencies.push((seen - at) as f64);
                        if t.ends_with("Confirmed") { confirmed += 1 } else { cancelled += 1 }
                    }
                }
                _ => {}
            }
        }
        Ok((latencies, confirmed, cancelled))
    });
    let warmed = tokio::task::spawn_blocking(move || placed_rx.recv_timeout(Duration::from_secs(120))).await?;
    anyhow::ensure!(warmed.is_ok(), "the warm-up order did not finish within 120 s");
    let cpu0: Vec<f64> = roles.iter().map(|(_, c)| c.id().map_or(0.0, super::proc::cpu_seconds)).collect();
    let started = tokio::time::Instant::now();
    let every = Duration::from_secs_f64(1.0 / args.rate as f64);
    for i in 0..total {
        tokio::time::sleep_until(started + every * i as u32).await;
        let decline = args.decline_every > 0 && i % args.decline_every == 0;
        publisher.publish(&herald_shop::orders::ORDERS, &order(i, &run_id, decline)).await?;
    }
    let published_in = started.elapsed();
    let (mut latencies, confirmed, cancelled) = reading.await?.map_err(|e| anyhow::anyhow!(e))?;
    let cpu: Vec<f64> = roles.iter().zip(&cpu0).map(|((_, c), before)| c.id().map_or(0.0, super::proc::cpu_seconds) - before).collect();
    for (_, child) in &mut roles {
        super::throughput::stop(child).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!("{total} orders at {} orders/s (published in {:.1} s): {confirmed} confirmed, {cancelled} cancelled", args.rate, published_in.as_secs_f64());
    println!("| orders/s | orders | p50 ms | p90 ms | p99 ms | max ms | CPU ms per order (orders + inventory + payments) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} ({}) |",
        args.rate,
        latencies.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
        cpu.iter().sum::<f64>() * 1000.0 / total as f64,
        roles.iter().zip(&cpu).map(|((r, _), c)| format!("{r} {:.2}", c * 1000.0 / total as f64)).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
