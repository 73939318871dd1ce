//! Projector throughput against the real broker and real databases.
//!
//! ```sh
//! cargo bench -p herald-projector --bench throughput -- --events 1000000 --rounds 3 \
//!     [--postgres postgres://herald@127.0.0.1:55432/herald] [--rebuild]
//! ```
//!
//! On one topic of `order_totals` events it measures, in each of `--rounds` rounds (the
//! order of the stores and of the ceiling methods rotated from round to round):
//! - **raw rdkafka**: a plain consumer with the projector's consumer properties reading the
//!   whole topic, keeping each record (`detach`) and doing nothing else;
//! - **bulk ceiling** of each store: the rows the projector writes (the topic folded per
//!   partition in batches of `--batch`, beforehand), written with each of the store's
//!   fastest methods (PostgreSQL: multi-row `VALUES`, `UNNEST` arrays, binary `COPY` into
//!   a staging table; SQLite: a prepared statement per row, multi-row `VALUES`), each
//!   batch in one transaction with a position compare-and-set. No Kafka, no decoding, no
//!   reads: the best of them is the ceiling;
//! - **projector**: the projector from an empty view to the end of the topic (steady rate
//!   from its first commit to its last);
//!
//! then the median and spread over the rounds, and optionally a full **rebuild** (new
//! version, swap) on each store.

#[path = "../examples/order_totals/projection.rs"]
mod projection;
#[path = "throughput/ceiling.rs"]
mod ceiling;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ceiling::Method;
use clap::Parser;
use herald_bench::machine::CpuTime;
use herald_bus::codec::SingleObject;
use herald_bus::{EventFamily, KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_projector::{rebuild, store, Projector, StopAt};
use herald_shop::{OrderCancelled, OrderEvent, OrderPlaced};
use projection::OrderTotals;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser, Debug)]
struct Args {
    /// Events in the topic.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Events per transaction (ceiling and projector).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Rounds of every measurement (median and spread are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// PostgreSQL admin URL; fresh databases are created (and dropped) for the run.
    #[arg(long, env = "HERALD_TEST_POSTGRES_URL")]
    postgres: Option<String>,
    /// Also time a full rebuild on each store.
    #[arg(long)]
    rebuild: bool,
    /// Reuse an existing topic (skips publishing).
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

/// Peak RSS while `f` runs, sampled from /proc/self/status.
struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    threads: Arc<std::sync::Mutex<ThreadCpu>>,
    started: (Instant, CpuTime),
}

/// CPU ticks per thread (by thread id: name, ticks at the start, ticks last seen), sampled
/// while a phase runs, so threads that exit before the end (the store thread) count too.
#[derive(Default)]
struct ThreadCpu(std::collections::HashMap<u32, (String, u64, u64)>);

impl ThreadCpu {
    fn sample(&mut self, first: bool) {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let name = stat[open + 1..close].to_owned();
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = fields.get(11).zip(fields.get(12)).and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?)).unwrap_or(0);
            let entry = self.0.entry(tid).or_insert_with(|| (name, if first { ticks } else { 0 }, ticks));
            entry.2 = ticks;
        }
    }

    /// CPU seconds per thread kind (names with their numbers cut off), largest first.
    fn summary(&self, machine: f64, wall: f64) -> String {
        let mut by_kind: std::collections::BTreeMap<String, u64> = Default::default();
        for (name, start, last) in self.0.values() {
            let kind = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-').to_owned();
            *by_kind.entry(kind).or_default() += last.saturating_sub(*start);
        }
        let mut kinds: Vec<_> = by_kind.into_iter().filter(|(_, t)| *t > 0).collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        let threads = kinds.iter().map(|(k, t)| format!("{k} {:.2}", *t as f64 / 100.0)).collect::<Vec<_>>().join(", ");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        format!("{threads}; whole machine {machine:.2} of {:.2} available", wall * cpus)
    }
}

impl Peak {
    fn start() -> Peak {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let threads = Arc::new(std::sync::Mutex::new(ThreadCpu::default()));
        threads.lock().unwrap_or_else(|p| p.into_inner()).sample(true);
        let (s, p, t) = (stop.clone(), peak.clone(), threads.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(), Ordering::Relaxed);
                t.lock().unwrap_or_else(|p| p.into_inner()).sample(false);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Peak { stop, peak, threads, started: (Instant::now(), CpuTime::now()) }
    }

    /// Peak RSS in MiB, and CPU seconds by thread kind.
    fn finish(self) -> (u64, String) {
        self.stop.store(true, Ordering::Relaxed);
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.sample(false);
        let (wall, machine) = (self.started.0.elapsed().as_secs_f64(), CpuTime::now().since(self.started.1).machine);
        (self.peak.load(Ordering::Relaxed).max(rss_kib()) / 1024, threads.summary(machine, wall))
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// The measurements of one store in one round.
#[derive(Default, Clone)]
struct StoreRound {
    /// events/s by ceiling method.
    ceilings: Vec<(Method, f64)>,
    /// The projection's batched apply fed from memory.
    memory: f64,
    projector: f64,
}

impl StoreRound {
    fn best(&self) -> (Method, f64) {
        self.ceilings.iter().copied().fold((Method::PgUnnest, 0.0), |a, b| if b.1 > a.1 { b } else { a })
    }
}

/// Median, minimum and maximum.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (median, v[0], v[n - 1])
}

fn show(v: Vec<f64>, digits: usize) -> String {
    let (m, lo, hi) = stats(v);
    format!("{m:>10.digits$}  ({lo:.digits$} - {hi:.digits$})")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // HERALD_RDKAFKA_* variables set librdkafka properties for every client of the run.
    let config = KafkaConfig::new(&args.bootstrap).with_env(std::env::vars());
    let topic_name = match &args.topic {
        Some(t) => t.clone(),
        None => publish(&config, &args).await?,
    };
    let topic: Topic<OrderEvent> = Topic::named(topic_name.clone());
    println!("topic {topic_name}: {} events, {} partitions, batch {}, {} rounds", args.events, args.partitions, args.batch, args.rounds);

    // The rows the projector writes, folded beforehand for the ceilings.
    let records = raw_read(&config, &topic_name, args.events).await?;
    let codec = SingleObject::new(OrderEvent::schemas().clone());
    let mut envelopes = Vec::with_capacity(records.len());
    for m in &records {
        envelopes.push(herald_bus::consumer::decode::<OrderEvent>(&codec, m).await.map_err(|f| anyhow::anyhow!(f.reason))?);
    }
    drop(records);
    let events = Arc::new(ceiling::split(envelopes, args.batch));
    let batches = Arc::new(ceiling::fold_batches(&events));
    let rows: usize = batches.iter().map(ceiling::Rows::len).sum();
    println!("{} transactions of at most {} events write {rows} rows ({:.2} rows per event)", batches.len(), args.batch, rows as f64 / args.events as f64);

    let mut kinds = vec!["sqlite"];
    if args.postgres.is_some() {
        kinds.push("postgres");
    }
    let mut raws = Vec::new();
    let mut results: Vec<(&str, Vec<StoreRound>)> = kinds.iter().map(|k| (*k, Vec::new())).collect();
    for round in 0..args.rounds {
        println!("-- round {} of {}", round + 1, args.rounds);
        let started = Instant::now();
        let records = raw_read(&config, &topic_name, args.events).await?;
        let raw = args.events as f64 / started.elapsed().as_secs_f64();
        drop(records);
        println!("raw rdkafka consumer:     {raw:>10.0} events/s");
        raws.push(raw);
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        order.rotate_left(round % kinds.len());
        for k in order {
            let kind = kinds[k];
            let mut methods = match kind {
                "sqlite" => vec![Method::SqlitePrepared, Method::SqliteValues],
                _ => vec![Method::PgValues, Method::PgUnnest, Method::PgCopy],
            };
            let turn = round % methods.len();
            methods.rotate_left(turn);
            let mut measured = StoreRound::default();
            for method in methods {
                let rate = ceiling_of(&args, kind, method, batches.clone()).await?;
                println!("{kind:8} ceiling, {:22} {rate:>10.0} events/s", method.name());
                measured.ceilings.push((method, rate));
            }
            measured.ceilings.sort_by_key(|(m, _)| m.name());
            let url = fresh_store_url(&args, kind, "memory")?;
            let (target, events) = (url.clone(), events.clone());
            measured.memory = tokio::task::spawn_blocking(move || ceiling::projection(&target, &events)).await??;
            forget_store(&args, &url)?;
            println!("{kind:8} projection from memory:   {:>10.0} events/s = {:.2} of the ceiling", measured.memory, measured.memory / measured.best().1);
            let (rate, cpu) = projector_run(&config, &args, &topic, kind).await?;
            let best = measured.best();
            println!("{kind:8} projector (steady):        {rate:>10.0} events/s = {:.2} of the ceiling ({})", rate / best.1, best.0.name());
            println!("{kind:8} projector CPU s by thread: {cpu}");
            measured.projector = rate;
            results[k].1.push(measured);
        }
    }

    println!("\n== {} rounds: median (min - max), events/s", args.rounds);
    println!("raw rdkafka consumer              {}", show(raws, 0));
    for (kind, rounds) in &results {
        if let Some(first) = rounds.first() {
            for (i, (method, _)) in first.ceilings.iter().enumerate() {
                println!("{kind:8} ceiling, {:22}   {}", method.name(), show(rounds.iter().map(|r| r.ceilings[i].1).collect(), 0));
            }
        }
        println!("{kind:8} ceiling (best of the round)   {}", show(rounds.iter().map(|r| r.best().1).collect(), 0));
        println!("{kind:8} projection from memory       {}", show(rounds.iter().map(|r| r.memory).collect(), 0));
        println!("{kind:8} projector (steady)           {}", show(rounds.iter().map(|r| r.projector).collect(), 0));
        println!("{kind:8} projector / ceiling          {}", show(rounds.iter().map(|r| r.projector / r.best().1).collect(), 2));
    }

    if args.rebuild {
        for kind in &kinds {
            let url = fresh_store_url(&args, kind, "rebuild")?;
            let store = store::open(&url)?;
            let peak = Peak::start();
            let started = Instant::now();
            let rebuilt = rebuild::rebuild(&config, &topic, || OrderTotals, store.clone(), rebuild::Options { max_batch: args.batch, ..rebuild::Options::new(format!("bench.{}", uuid::Uuid::new_v4())) }, std::future::pending()).await?;
            let elapsed = started.elapsed().as_secs_f64();
            let (mb, _) = peak.finish();
            println!("{kind:8} rebuild:        {:>10.0} events/s  ({} events in {elapsed:.1}s, version {}, swapped {}; peak RSS {mb} MiB)", rebuilt.events as f64 / elapsed, rebuilt.events, rebuilt.version, rebuilt.swapped);
            drop(store);
            forget_store(&args, &url)?;
        }
    }
    Ok(())
}

/// A fresh, empty store of `kind` for one measurement.
fn fresh_store_url(args: &Args, kind: &str, tag: &str) -> anyhow::Result<String> {
    Ok(match kind {
        "sqlite" => format!("sqlite:{}", std::env::temp_dir().join(format!("herald-bench-{tag}-{}.db", uuid::Uuid::new_v4())).display()),
        _ => fresh_pg(args.postgres.as_deref().unwrap_or_default(), tag)?,
    })
}

/// Deletes the store made by [`fresh_store_url`].
fn forget_store(args: &Args, url: &str) -> anyhow::Result<()> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        return Ok(());
    }
    let name = url.rsplit_once('/').map_or("", |(_, n)| n).to_owned();
    let admin = args.postgres.clone().unwrap_or_default();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("drop database panicked"))?
}

/// One ceiling measurement on a fresh store.
async fn ceiling_of(args: &Args, kind: &str, method: Method, batches: Arc<Vec<ceiling::Rows>>) -> anyhow::Result<f64> {
    let url = fresh_store_url(args, kind, "ceiling")?;
    let target = url.clone();
    let rate = tokio::task::spawn_blocking(move || match target.strip_prefix("sqlite:") {
        Some(path) => ceiling::sqlite(path, &batches, method),
        None => ceiling::postgres(&target, &batches, method),
    })
    .await??;
    forget_store(args, &url)?;
    Ok(rate)
}

/// The projector from an empty view to the end of the topic: its steady rate (first
/// commit to the commit of the last event) and its CPU by thread.
async fn projector_run(config: &KafkaConfig, args: &Args, topic: &Topic<OrderEvent>, kind: &str) -> anyhow::Result<(f64, String)> {
    let url = fresh_store_url(args, kind, "projector")?;
    let store = store::open(&url)?;
    let peak = Peak::start();
    let projector = Projector::builder(config.clone(), format!("bench.{}", uuid::Uuid::new_v4()), topic, OrderTotals, store.clone())
        .max_batch(args.batch)
        .stop_at(StopAt::CaughtUp)
        .build()
        .await?;
    let status = projector.status();
    // From the first commit to the one that applied the last event: the steady rate
    // leaves out the group join before and the shutdown after (leaving the group,
    // closing the client), as the ceiling leaves them out.
    let window = {
        let status = status.clone();
        let target = args.events as u64;
        tokio::spawn(async move {
            let mut first = None;
            loop {
                let applied = status.get().applied_total;
                if applied > 0 && first.is_none() {
                    first = Some((Instant::now(), applied));
                }
                if applied >= target {
                    return first.map(|(at, before)| (at, before, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    projector.run(std::future::pending()).await?;
    let applied = status.get().applied_total;
    let (first, before, last) = tokio::time::timeout(Duration::from_secs(5), window)
        .await
        .map_err(|_| anyhow::anyhow!("the projector stopped after {applied} of {} events", args.events))??
        .ok_or_else(|| anyhow::anyhow!("no batch committed"))?;
    let steady = (applied - before) as f64 / (last - first).as_secs_f64();
    let (_, cpu) = peak.finish();
    let cpu = format!("{cpu}; {:.0} events per chunk handed to the store thread", applied as f64 / status.get().batches_total.max(1) as f64);
    drop(store);
    forget_store(args, &url)?;
    Ok((steady, cpu))
}

async fn publish(config: &KafkaConfig, args: &Args) -> anyhow::Result<String> {
    let name = format!("bench.projector.{}", uuid::Uuid::new_v4().simple());
    herald_bus::admin::create_topics(config, &[herald_bus::admin::TopicSpec::new(&name).partitions(args.partitions)]).await?;
    let topic: Topic<OrderEvent> = Topic::named(name.clone());
    let publisher = Publisher::new(config, PublisherOptions::new("/bench"))?;
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..args.events {
        let (p, topic) = (publisher.clone(), topic.clone());
        pending.push(async move {
            if i % 10 == 9 {
                p.publish(&topic, &OrderCancelled::example(&format!("o-{}", i - 5), "bench", None)).await
            } else {
                p.publish(&topic, &OrderPlaced::example(&format!("o-{i}"), &format!("c-{}", i % 5000), (i % 1000) as i64 + 1)).await
            }
        });
        if pending.len() >= 5000 {
            for r in futures::future::join_all(pending.drain(..)).await {
                r?;
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r?;
    }
    publisher.flush(Duration::from_secs(30)).await?;
    eprintln!("published {} events in {:.1}s", args.events, started.elapsed().as_secs_f64());
    Ok(name)
}

async fn raw_read(config: &KafkaConfig, topic: &str, n: usize) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    // The projector's own consumer properties, so both read alike.
    let mut client = config.client_config(herald_projector::runner::CONSUMER_DEFAULTS);
    client.set("group.id", format!("bench.raw.{}", uuid::Uuid::new_v4())).set("enable.auto.commit", "false").set("enable.partition.eof", "false");
    let consumer: StreamConsumer = client.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(consumer.recv().await?.detach());
    }
    Ok(out)
}

fn fresh_pg(admin: &str, tag: &str) -> anyhow::Result<String> {
    let name = format!("herald_bench_{tag}_{}", uuid::Uuid::new_v4().simple());
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b).to_owned();
    let admin = admin.to_owned();
    let create = name.clone();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
        client.batch_execute(&format!("CREATE DATABASE {create}"))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("create database panicked"))??;
    Ok(format!("{base}/{name}"))
}
