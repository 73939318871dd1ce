//! Projector throughput against the real broker and real databases.
//!
//! ```sh
//! cargo bench -p herald-projector --bench throughput -- --events 200000 \
//!     [--postgres postgres://herald@127.0.0.1:55432/herald] [--rebuild]
//! ```
//!
//! For each store it measures, on the same topic of `order_totals` events:
//! - **store ceiling**: the projection's own upsert code fed from memory (records
//!   fetched and decoded beforehand), in transactions of `--batch` events;
//! - **projector**: the projector from an empty view to the end of the topic;
//! - **raw rdkafka**: a plain consumer with the projector's consumer properties reading the
//!   same topic, keeping each record (`detach`) and doing nothing else;
//! - optionally **rebuild**: a full rebuild (new version, swap) of the same events;
//!
//! and the peak resident memory of each phase (sampled every 20 ms).

#[path = "../examples/order_totals/projection.rs"]
mod projection;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use herald_bench::machine::CpuTime;
use herald_bus::codec::SingleObject;
use herald_bus::{Envelope, EventFamily, KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_projector::{rebuild, store, Projection, Projector, StopAt, Store};
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
    /// PostgreSQL admin URL; a fresh database is created for the run.
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
    println!("topic {topic_name}: {} events, {} partitions, batch {}", args.events, args.partitions, args.batch);

    let peak = Peak::start();
    let started = Instant::now();
    let records = raw_read(&config, &topic_name, args.events).await?;
    let raw = args.events as f64 / started.elapsed().as_secs_f64();
    let (raw_mb, _) = peak.finish();
    println!("raw rdkafka consumer:   {raw:>10.0} events/s  (peak RSS {raw_mb} MiB, records kept in memory)");

    let codec = SingleObject::new(OrderEvent::schemas().clone());
    let mut envelopes = Vec::with_capacity(records.len());
    for m in &records {
        envelopes.push(herald_bus::consumer::decode::<OrderEvent>(&codec, m).await.map_err(|f| anyhow::anyhow!(f.reason))?);
    }
    drop(records);

    let mut stores = vec![("sqlite", format!("sqlite:{}", std::env::temp_dir().join(format!("herald-bench-{}.db", uuid::Uuid::new_v4())).display()))];
    if let Some(admin) = &args.postgres {
        stores.push(("postgres", fresh_pg(admin, "ceiling")?));
    }
    let mut ceilings = Vec::new();
    for (kind, url) in &stores {
        let ceiling = ceiling(store::open(url)?, &envelopes, args.batch).await?;
        println!("{kind:8} store ceiling:  {ceiling:>10.0} events/s  (upserts from memory, {} per transaction)", args.batch);
        ceilings.push(ceiling);
    }
    drop(envelopes);
    for ((kind, _), ceiling) in stores.iter().zip(ceilings) {
        let fresh = match *kind {
            "sqlite" => format!("sqlite:{}", std::env::temp_dir().join(format!("herald-bench-{}.db", uuid::Uuid::new_v4())).display()),
            _ => fresh_pg(args.postgres.as_deref().unwrap_or_default(), "projector")?,
        };
        let store = store::open(&fresh)?;
        let peak = Peak::start();
        let started = Instant::now();
        let projector = Projector::builder(config.clone(), format!("bench.{}", uuid::Uuid::new_v4()), &topic, OrderTotals, store.clone())
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
        let elapsed = started.elapsed().as_secs_f64();
        let applied = status.get().applied_total;
        let (first, before, last) = tokio::time::timeout(Duration::from_secs(5), window)
            .await
            .map_err(|_| anyhow::anyhow!("the projector stopped after {applied} of {} events", args.events))??
            .ok_or_else(|| anyhow::anyhow!("no batch committed"))?;
        let steady = (applied - before) as f64 / (last - first).as_secs_f64();
        let (mb, cpu) = peak.finish();
        println!(
            "{kind:8} projector:      {steady:>10.0} events/s  steady ({:.2} of store ceiling, {:.2} of min(ceiling, raw)); {:.0} events/s incl. startup and group join ({applied} events in {elapsed:.1}s); peak RSS {mb} MiB",
            steady / ceiling,
            steady / ceiling.min(raw),
            applied as f64 / elapsed,
        );
        println!("{kind:8} projector CPU s by thread: {cpu}");
        if args.rebuild {
            let peak = Peak::start();
            let started = Instant::now();
            let rebuilt = rebuild::rebuild(&config, &topic, || OrderTotals, store.clone(), rebuild::Options { max_batch: args.batch, ..rebuild::Options::new(format!("bench.{}", uuid::Uuid::new_v4())) }, std::future::pending()).await?;
            let elapsed = started.elapsed().as_secs_f64();
            let (mb, _) = peak.finish();
            println!("{kind:8} rebuild:        {:>10.0} events/s  ({} events in {elapsed:.1}s, version {}, swapped {}; peak RSS {mb} MiB)", rebuilt.events as f64 / elapsed, rebuilt.events, rebuilt.version, rebuilt.swapped);
        }
    }
    Ok(())
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

/// The projection's apply code fed from memory: the best the store can do.
async fn ceiling(store: Arc<dyn Store>, envelopes: &[Envelope<OrderEvent>], batch: usize) -> anyhow::Result<f64> {
    let envelopes: Vec<Envelope<OrderEvent>> = envelopes.to_vec();
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut conn = store.connect()?;
        {
            let mut tx = conn.begin(1)?;
            herald_projector::position::migrate(tx.as_tx())?;
            OrderTotals.migrate(tx.as_tx())?;
            tx.commit()?;
        }
        let key = herald_projector::position::Key { projection: "ceiling".into(), version: 1, topic: "t".into() };
        let started = Instant::now();
        let mut from = None;
        for chunk in envelopes.chunks(batch) {
            let mut tx = conn.begin(1)?;
            // The same bookkeeping the projector does: one position compare-and-set.
            let to = from.unwrap_or(0) + chunk.len() as i64;
            herald_projector::position::advance(tx.as_tx(), &key, 0, from, to)?;
            for e in chunk {
                OrderTotals.apply(tx.as_tx(), e)?;
            }
            tx.commit()?;
            from = Some(to);
        }
        Ok(envelopes.len() as f64 / started.elapsed().as_secs_f64())
    })
    .await?
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
