//! The outbox relay against the bus publisher publishing the same events directly, in one
//! run, on a real broker and PostgreSQL.
//!
//! ```text
//! bash scripts/kafka start && bash scripts/postgres start
//! cargo run --release -p herald-bench --bin outbox -- --events 50000 --rounds 2
//! ```
//!
//! Per round, on fresh 6-partition topics and a fresh outbox table (32 buckets, one relay):
//! - **drain**: `--events` rows committed while no relay runs (100 per transaction), then
//!   the relay starts: rows relayed per second, until an independent `read_committed`
//!   reader has every event. Baseline: the bus `Publisher::publish_all` of the same events,
//!   until the reader has them all.
//! - **live**: `--writers` tasks commit one event per transaction (state row + outbox row)
//!   as fast as they can while the relay runs: the rate of the whole pipe, and per event the
//!   delay from the commit returning to the reader receiving it (p50/p99). Baseline: as many
//!   tasks calling `Publisher::publish` (each awaits its acknowledgement): the delay from
//!   the call to the reader receiving it.
//!
//! A third side, **handwritten**, is the strongest relay a user would write without Herald,
//! over the same table and the same writes: a loop of `SELECT ... ORDER BY seq LIMIT batch
//! FOR UPDATE SKIP LOCKED`, every row sent with a raw rdkafka `FutureProducer`
//! (idempotent, `acks=all`, `linger.ms=5`), all acknowledgements awaited, `DELETE ... WHERE
//! seq = ANY(...)`, `COMMIT`; when the table is empty it polls again after
//! `--baseline-poll-ms` (5 ms by default: tighter than most would dare, for the best latency).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::{Event, KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_outbox::relay::{Relay, RelayOptions};
use herald_outbox::{Outbox, OutboxTable};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
struct Args {
    /// Events per side and mode.
    #[arg(long, default_value_t = 50_000)]
    events: usize,
    /// Rounds (the order of the sides alternates).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Concurrent writers (live mode).
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// PostgreSQL URL.
    #[arg(long, default_value = "postgres://herald@127.0.0.1:55432/herald")]
    postgres: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Relay batch size.
    #[arg(long, default_value_t = 1000)]
    batch: i64,
    /// The hand-written relay's poll interval when the table is empty, in milliseconds.
    #[arg(long, default_value_t = 5)]
    baseline_poll_ms: u64,
}

/// Which relay drains the outbox table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayKind {
    /// herald-outbox's relay.
    Herald,
    /// The hand-written SKIP LOCKED loop (see the module docs).
    Handwritten,
}

/// The benchmark's event: an account's n-th deposit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Deposited {
    account: String,
    n: i64,
    cents: i64,
}

impl Event for Deposited {
    const TYPE: &'static str = "herald.bench.outbox.Deposited";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Deposited","namespace":"herald.bench.outbox","fields":[{"name":"account","type":"string"},{"name":"n","type":"long"},{"name":"cents","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.account
    }
}

herald_bus::family! {
    /// The benchmark topic's events.
    #[derive(Debug, Clone)]
    enum Deposits {
        /// A deposit.
        Deposited(Deposited),
    }
}

fn event(i: usize) -> Deposited {
    Deposited { account: format!("account-{}", i % 1000), n: i as i64, cents: 100 + (i % 97) as i64 }
}

/// Reads a topic from the start on its own thread; when each `ce_id` arrived.
struct Reader {
    arrived: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn start(config: &KafkaConfig, topic: &str) -> anyhow::Result<Reader> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", config.bootstrap())
            .set("group.id", format!("herald.bench.outbox.reader.{}", uuid::Uuid::new_v4().simple()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..6 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let arrived = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (arrived.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else { continue };
                let now = Instant::now();
                let id = message.headers().and_then(|h| h.iter().find(|h| h.key == "ce_id").and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned()));
                if let Some(id) = id {
                    a.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_insert(now);
                }
            }
        });
        Ok(Reader { arrived, stop, thread: Some(thread) })
    }

    fn count(&self) -> usize {
        self.arrived.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            anyhow::ensure!(Instant::now() < deadline, "only {} of {n} events arrived", self.count());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        arrived.values().max().copied().ok_or_else(|| anyhow::anyhow!("nothing arrived"))
    }

    fn finish(mut self) -> HashMap<String, Instant> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.arrived.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Delays in ms, sorted, from `started[id]` to arrival.
fn delays(started: &HashMap<String, Instant>, arrived: &HashMap<String, Instant>) -> Vec<f64> {
    let mut d: Vec<f64> = started.iter().filter_map(|(id, t)| arrived.get(id).map(|a| a.saturating_duration_since(*t).as_secs_f64() * 1000.0)).collect();
    d.sort_by(f64::total_cmp);
    d
}

struct Row {
    round: usize,
    side: &'static str,
    mode: &'static str,
    rate: f64,
    p50: f64,
    p99: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kafka = KafkaConfig::new(&args.bootstrap);
    let pg = herald_outbox::config(&args.postgres)?;
    let mut rows = Vec::new();
    let mut topics = Vec::new();
    for round in 1..=args.rounds {
        let sides: [&'static str; 3] = if round % 2 == 1 { ["outbox", "handwritten", "publisher"] } else { ["publisher", "handwritten", "outbox"] };
        for side in sides {
            for mode in ["drain", "live"] {
                let topic_name = format!("herald.bench.outbox.{}", uuid::Uuid::new_v4().simple());
                create_topics(&kafka, &[TopicSpec::new(&topic_name).partitions(6)]).await?;
                topics.push(topic_name.clone());
                let topic: Topic<Deposits> = Topic::named(&topic_name);
                let row = match side {
                    "outbox" => outbox_side(&args, &kafka, &pg, &topic, mode, round, RelayKind::Herald).await?,
                    "handwritten" => outbox_side(&args, &kafka, &pg, &topic, mode, round, RelayKind::Handwritten).await?,
                    _ => publisher_side(&args, &kafka, &topic, mode, round).await?,
                };
                println!("round {round} {side:9} {mode:5}: {:>8.0} events/s, p50 {:>7.2} ms, p99 {:>7.2} ms", row.rate, row.p50, row.p99);
                rows.push(row);
            }
        }
    }
    let _ = herald_bench::broker::delete_topics(&args.bootstrap, &topics).await;
    println!("\nmachine: {}", herald_bench::machine::Machine::current());
    println!("command: cargo run --release -p herald-bench --bin outbox -- --events {} --rounds {} --writers {} --batch {} --baseline-poll-ms {}", args.events, args.rounds, args.writers, args.batch, args.baseline_poll_ms);
    println!("\n| round | side | mode | events/s | p50 ms | p99 ms |\n|---|---|---|---:|---:|---:|");
    for r in &rows {
        let latency = |v: f64| if v.is_nan() { "–".to_owned() } else { format!("{v:.2}") };
        println!("| {} | {} | {} | {:.0} | {} | {} |", r.round, r.side, r.mode, r.rate, latency(r.p50), latency(r.p99));
    }
    Ok(())
}

async fn outbox_side(args: &Args, kafka: &KafkaConfig, pg: &tokio_postgres::Config, topic: &Topic<Deposits>, mode: &'static str, round: usize, kind: RelayKind) -> anyhow::Result<Row> {
    let side = match kind {
        RelayKind::Herald => "outbox",
        RelayKind::Handwritten => "handwritten",
    };
    let name = format!("bench_outbox_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let table = OutboxTable::new(&name)?;
    let mut client = herald_outbox::connect(pg).await?;
    table.ensure_schema(&mut client).await?;
    client.batch_execute(&format!("CREATE TABLE {name}_state (account text PRIMARY KEY, n bigint NOT NULL)")).await?;
    let outbox = Outbox::new(table.clone(), "/bench/outbox");
    let reader = Reader::start(kafka, topic.name())?;
    let stop = CancellationToken::new();
    let options = RelayOptions { batch_size: args.batch, poll_interval: Duration::from_millis(200), ..RelayOptions::default() };
    let start_relay = || -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
        Ok(match kind {
            RelayKind::Herald => {
                let relay = Relay::new(pg.clone(), table.clone(), kafka, options.clone())?;
                let stopped = stop.clone().cancelled_owned();
                tokio::spawn(async move { Ok(relay.run(stopped).await?) })
            }
            RelayKind::Handwritten => tokio::spawn(handwritten_relay(pg.clone(), name.clone(), kafka.bootstrap().to_owned(), args.batch, Duration::from_millis(args.baseline_poll_ms), stop.clone())),
        })
    };
    let row = if mode == "drain" {
        for chunk in (0..args.events).collect::<Vec<_>>().chunks(100) {
            let tx = client.transaction().await?;
            for i in chunk {
                outbox.publish(&tx, topic, &event(*i)).await?;
            }
            tx.commit().await?;
        }
        let started = Instant::now();
        let relay = start_relay()?;
        let last = reader.wait_for(args.events, Duration::from_secs(600)).await?;
        stop.cancel();
        relay.await??;
        reader.finish();
        Row { round, side, mode, rate: args.events as f64 / last.duration_since(started).as_secs_f64(), p50: f64::NAN, p99: f64::NAN }
    } else {
        let relay = start_relay()?;
        let committed = Arc::new(Mutex::new(HashMap::with_capacity(args.events)));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..args.writers {
            let (outbox, topic, committed, pg, name) = (outbox.clone(), topic.clone(), committed.clone(), pg.clone(), name.clone());
            let count = args.events / args.writers + usize::from(w < args.events % args.writers);
            let writers = args.writers;
            tasks.push(tokio::spawn(async move {
                let mut client = herald_outbox::connect(&pg).await?;
                let upsert = format!("INSERT INTO {name}_state VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET n = $2");
                for k in 0..count {
                    let e = event(k * writers + w);
                    let tx = client.transaction().await?;
                    tx.execute(&upsert, &[&e.account, &e.n]).await?;
                    let id = outbox.publish(&tx, &topic, &e).await?;
                    tx.commit().await?;
                    committed.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), Instant::now());
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let last = reader.wait_for(args.events, Duration::from_secs(600)).await?;
        stop.cancel();
        relay.await??;
        let arrived = reader.finish();
        let committed = std::mem::take(&mut *committed.lock().unwrap_or_else(|p| p.into_inner()));
        let d = delays(&committed, &arrived);
        Row { round, side, mode, rate: args.events as f64 / last.duration_since(started).as_secs_f64(), p50: percentile(&d, 0.5), p99: percentile(&d, 0.99) }
    };
    client.batch_execute(&format!("DROP TABLE {name}, {name}_buckets, {name}_settings, {name}_state")).await?;
    Ok(row)
}

/// The strongest relay a user would write by hand (see the module docs): SKIP LOCKED
/// batches in `seq` order, a raw idempotent producer, every acknowledgement awaited before
/// the rows are deleted in the same transaction.
async fn handwritten_relay(pg: tokio_postgres::Config, table: String, bootstrap: String, batch: i64, poll: Duration, stop: CancellationToken) -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let mut client = herald_outbox::connect(&pg).await?;
    let select = format!("SELECT seq, topic, aggregate, payload, header_names, header_values FROM {table} ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED");
    let delete = format!("DELETE FROM {table} WHERE seq = ANY($1)");
    while !stop.is_cancelled() {
        let tx = client.transaction().await?;
        let rows = tx.query(&select, &[&batch]).await?;
        if rows.is_empty() {
            tx.commit().await?;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(poll) => continue,
            }
        }
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let (topic, key, payload): (&str, &str, &[u8]) = (row.get(1), row.get(2), row.get(3));
            let (names, values): (Vec<String>, Vec<Vec<u8>>) = (row.get(4), row.get(5));
            let mut headers = OwnedHeaders::new_with_capacity(names.len());
            for (name, value) in names.iter().zip(&values) {
                headers = headers.insert(Header { key: name.as_str(), value: Some(value.as_slice()) });
            }
            let mut record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for delivery in deliveries {
            delivery.await?.map_err(|(e, _)| e)?;
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        tx.execute(&delete, &[&seqs]).await?;
        tx.commit().await?;
    }
    Ok(())
}

async fn publisher_side(args: &Args, kafka: &KafkaConfig, topic: &Topic<Deposits>, mode: &'static str, round: usize) -> anyhow::Result<Row> {
    let publisher = Publisher::new(kafka, PublisherOptions::new("/bench/publisher"))?;
    let reader = Reader::start(kafka, topic.name())?;
    let row = if mode == "drain" {
        let events: Vec<Deposited> = (0..args.events).map(event).collect();
        let started = Instant::now();
        for result in publisher.publish_all(topic, &events).await {
            result?;
        }
        let last = reader.wait_for(args.events, Duration::from_secs(600)).await?;
        reader.finish();
        Row { round, side: "publisher", mode, rate: args.events as f64 / last.duration_since(started).as_secs_f64(), p50: f64::NAN, p99: f64::NAN }
    } else {
        let sent = Arc::new(Mutex::new(HashMap::with_capacity(args.events)));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..args.writers {
            let (publisher, topic, sent) = (publisher.clone(), topic.clone(), sent.clone());
            let count = args.events / args.writers + usize::from(w < args.events % args.writers);
            let writers = args.writers;
            tasks.push(tokio::spawn(async move {
                for k in 0..count {
                    let e = event(k * writers + w);
                    let meta = publisher.metadata_for(&e);
                    let at = Instant::now();
                    publisher.publish_with(&topic, &e, meta.clone()).await?;
                    sent.lock().unwrap_or_else(|p| p.into_inner()).insert(meta.id.to_string(), at);
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let last = reader.wait_for(args.events, Duration::from_secs(600)).await?;
        let arrived = reader.finish();
        let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
        let d = delays(&sent, &arrived);
        Row { round, side: "publisher", mode, rate: args.events as f64 / last.duration_since(started).as_secs_f64(), p50: percentile(&d, 0.5), p99: percentile(&d, 0.99) }
    };
    publisher.flush(Duration::from_secs(10)).await?;
    Ok(row)
}
