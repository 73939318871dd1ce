//! `react reads`: reading one aggregate's stream back through the event store's index
//! (herald-aggregate's `StreamIndex` projection into SQLite, then the records fetched by
//! offset) against the strongest baseline without an index: a plain rdkafka consumer that
//! reads the aggregate's partition from its start to its end and keeps the records of that
//! key (no decoding on either side).
//!
//! 1. **fill**: `--events` `Add` commands over `--keys` aggregates, decided by the real
//!    engine into the event topic (one partition: the scan reads all of it, as it would
//!    read the one partition of a key in a topic of any width).
//! 2. **index**: the `StreamIndex` projector in this process until it holds every event.
//! 3. **reads**: `--reads` aggregates spread over the keys; each read by index and by scan,
//!    the two in alternating order; the time of each and the records each fetched.

use std::time::{Duration, Instant};

use herald_aggregate::{Aggregate, Decider, EventStore, StreamIndex};
use herald_bench::broker::{self, Names};
use herald_bench::machine::Machine;
use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_choreography::engine::Engine;
use herald_projector::Projector;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{preload_commands, settings, Counter, CounterEvent};

/// `react reads` arguments.
#[derive(Debug, clap::Args)]
pub struct ReadsArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Events (commands, one event each) in the event partition.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Aggregates they are spread over (each gets events / keys).
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// Streams read back, each both ways.
    #[arg(long, default_value_t = 30)]
    reads: usize,
}

/// Reads partition 0 of `topic` from its start to its end, read_committed, keeping the
/// records of `key`: the scan. Returns (kept, read).
fn scan(bootstrap: &str, topic: &str, key: &str) -> anyhow::Result<(u64, u64)> {
    let mut kept = 0u64;
    let read = crate::partition::read_to_end(bootstrap, topic, |m| kept += u64::from(m.key() == Some(key.as_bytes())))?;
    Ok((kept, read.records))
}

/// The rows of the index (on a blocking thread: the stores' clients are blocking).
async fn indexed(store: &std::sync::Arc<dyn herald_projector::store::Store>) -> anyhow::Result<i64> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let mut conn = store.connect()?;
        let mut tx = conn.read()?;
        let row = tx.as_tx().query_opt(&format!("SELECT COUNT(*) FROM {}", herald_aggregate::index::VIEW), &[])?;
        Ok(row.and_then(|r| r.int(0).ok()).unwrap_or(0))
    })
    .await?
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN)
}

/// The benchmark.
pub async fn run(args: ReadsArgs) -> anyhow::Result<()> {
    let config = KafkaConfig::new(&args.bootstrap);
    let publisher = Publisher::new(&config, PublisherOptions::new("/herald/bench"))?;
    let prefix = format!("{}.", Names::new().next("reads"));
    let (commands, events, replies) = (format!("{prefix}{}", Counter::COMMANDS.name()), format!("{prefix}{}", Counter::EVENTS.name()), format!("{prefix}replies"));
    let specs: Vec<TopicSpec> = [&commands, &events, &replies].iter().map(|t| TopicSpec::new(t.as_str()).partitions(1)).collect();
    create_topics(&config, &specs).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let created = vec![commands.clone(), events.clone(), replies, format!("{prefix}{}.changelog", Counter::NAME)];

    // 1. Fill.
    preload_commands(&publisher, &commands, None, args.events, args.keys).await?;
    let mut s = settings(100);
    s.topic_prefix = prefix.clone();
    let engine = Engine::new(&config, Decider(Counter), s)?;
    let stop = CancellationToken::new();
    let until = stop.clone();
    let filling = Instant::now();
    let running = tokio::spawn(engine.run(async move { until.cancelled().await }));

    // 2. Index, while the engine decides.
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir)?;
    let store = herald_projector::store::open(&format!("sqlite:{}", dir.join("index.db").display()))?;
    let events_topic: Topic<CounterEvent> = Topic::named(&events);
    let projector = Projector::builder(config.clone(), format!("{prefix}index"), &events_topic, StreamIndex::<Counter>::new(), store.clone()).build().await?;
    let stop_index = CancellationToken::new();
    let indexing = tokio::spawn(projector.run(stop_index.clone().cancelled_owned()));
    let deadline = Instant::now() + Duration::from_secs(3600);
    while indexed(&store).await? < args.events as i64 {
        anyhow::ensure!(Instant::now() < deadline, "the index does not hold {} events after an hour", args.events);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("{} events decided and indexed in {:.1} s", args.events, filling.elapsed().as_secs_f64());
    stop.cancel();
    running.await??;

    // 3. Reads.
    let reads = EventStore::new(&config, &events, store.clone())?;
    let per_key = args.events / args.keys;
    let (mut by_index, mut by_scan, mut fetched) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.reads {
        // Spread over the keys (Knuth's multiplicative hash of the read's number).
        let key = format!("k{}", (i as u64).wrapping_mul(2_654_435_761) % args.keys);
        let indexed_read = async {
            let before = reads.records_read().await;
            let started = Instant::now();
            let stream = reads.read_stream_raw(&key, 1).await?;
            let took = started.elapsed().as_secs_f64();
            anyhow::ensure!(stream.len() as u64 == per_key, "{key}: {} events by index, not {per_key}", stream.len());
            Ok::<_, anyhow::Error>((took, reads.records_read().await - before))
        };
        let scanned_read = {
            let (bootstrap, topic, key) = (args.bootstrap.clone(), events.clone(), key.clone());
            async move {
                let started = Instant::now();
                let (kept, read) = tokio::task::spawn_blocking(move || scan(&bootstrap, &topic, &key)).await??;
                let took = started.elapsed().as_secs_f64();
                anyhow::ensure!(kept == per_key, "{kept} events by scan, not {per_key}");
                Ok::<_, anyhow::Error>((took, read))
            }
        };
        let ((index_s, index_records), (scan_s, _)) = if i % 2 == 0 {
            let a = indexed_read.await?;
            (a, scanned_read.await?)
        } else {
            let b = scanned_read.await?;
            (indexed_read.await?, b)
        };
        by_index.push(index_s);
        by_scan.push(scan_s);
        fetched.push(index_records as f64);
    }
    stop_index.cancel();
    indexing.await??;
    drop(reads);
    let _ = broker::delete_topics(&args.bootstrap, &created).await;
    let _ = std::fs::remove_dir_all(&dir);

    println!("\n{} events of {} aggregates ({per_key} each) in one event partition; {} streams read back, each by index and by scan, alternating", args.events, args.keys, args.reads);
    println!("{}\n", Machine::current());
    println!("| read of one stream | median ms | p90 ms | records fetched |");
    println!("|---|---|---|---|");
    println!("| Herald `EventStore::read_stream_raw` (index in SQLite + fetch by offset) | {:.1} | {:.1} | {:.0} |", quantile(&by_index, 0.5) * 1e3, quantile(&by_index, 0.9) * 1e3, quantile(&fetched, 0.5));
    println!("| scan: raw rdkafka consumer, the partition start to end, key filter | {:.1} | {:.1} | {} |", quantile(&by_scan, 0.5) * 1e3, quantile(&by_scan, 0.9) * 1e3, args.events);
    let ratios: Vec<f64> = by_scan.iter().zip(&by_index).map(|(s, i)| s / i).collect();
    println!("\nscan time / index time per read: median {:.1} [{:.1} .. {:.1}]", quantile(&ratios, 0.5), quantile(&ratios, 0.0), quantile(&ratios, 1.0));
    Ok(())
}
