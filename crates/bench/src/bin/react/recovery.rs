//! `react recovery`: how long a new owner of an aggregate's command partition takes from
//! its start to its first decided command, once the partition holds `--events` events.
//!
//! Per `--keys` value, on fresh one-partition topics:
//! 1. **fill**: `--events` `Add` commands over that many aggregates pre-loaded, decided by
//!    the real engine (`Decider(Counter)`, 64 remembered answers, the engine's defaults):
//!    the events, the changelog and the offsets are what the engine writes; then it stops
//!    (in order: its last transaction committed).
//! 2. **raw reads** with a plain rdkafka consumer (read_committed, to partition EOF): the
//!    event partition (what the "snapshot + events after it" reads, at most) and
//!    the changelog partition (what a restore reads): records, bytes, seconds.
//! 3. **takeover**: a new engine on the same topics and group; the time from its start to
//!    the reply of one command sent as it starts (`CommandClient`), and the restore alone
//!    (the engine's `restoring` gauge from 1 to 0, sampled every 2 ms). The same takeover on
//!    empty topics first gives the part that is not restore (group join, producer init).

use std::time::{Duration, Instant};

use herald_aggregate::{CommandClient, Decider};
use herald_bench::broker::{self, Names};
use herald_bench::machine::Machine;
use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_choreography::engine::Engine;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::aggregate::{preload_commands, settings, Add, Counter, CounterCommand};

/// `react recovery` arguments.
#[derive(Debug, clap::Args)]
pub struct RecoveryArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Events (commands, one event each) in the partition.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Aggregate counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    keys: Vec<u64>,
    /// Commit interval of the engine in ms.
    #[arg(long, default_value_t = 100)]
    commit_ms: u64,
    /// Takeovers measured per filled partition.
    #[arg(long, default_value_t = 3)]
    takeovers: usize,
    /// Create the changelog first with this `segment.bytes` (MiB) and
    /// `min.cleanable.dirty.ratio` 0.1, so the broker's cleaner can compact it during the
    /// fill (default: the engine creates it, with its `CHANGELOG_CONFIGS`: 16 MiB and 0.1).
    #[arg(long)]
    changelog_segment_mib: Option<u64>,
    /// Seconds to wait after the fill before reading and taking over (the cleaner's time).
    #[arg(long, default_value_t = 0)]
    settle_s: u64,
}

/// One raw read of a partition.
struct Read {
    records: u64,
    bytes: u64,
    seconds: f64,
}

/// Reads partition 0 of `topic` from its start to EOF, read_committed.
fn raw_read(bootstrap: &str, topic: &str) -> anyhow::Result<Read> {
    let mut bytes = 0u64;
    let read = crate::partition::read_to_end(bootstrap, topic, |m| bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64)?;
    Ok(Read { records: read.records, bytes, seconds: read.seconds })
}

/// One takeover: from the engine's start to the probe's reply, and the restore alone.
struct Takeover {
    first_reply: f64,
    restore: Option<f64>,
}

/// Starts a new owner on `prefix`'s topics and sends one command as it starts.
async fn takeover(config: &KafkaConfig, prefix: &str, commit_ms: u64) -> anyhow::Result<Takeover> {
    let (commands, replies) = (format!("{prefix}{}", <Counter as herald_aggregate::Aggregate>::COMMANDS.name()), format!("{prefix}replies"));
    let client = CommandClient::new(config, Topic::<CounterCommand>::named(&commands), replies).await?.with_timeout(Duration::from_secs(600));
    let mut s = settings(commit_ms);
    s.topic_prefix = prefix.to_owned();
    let engine = Engine::new(config, Decider(Counter), s)?;
    let health = engine.health();
    let stop = CancellationToken::new();
    let until = stop.clone();
    // The restore: the engine's `restoring` gauge, sampled on its own thread.
    let watching = CancellationToken::new();
    let watch = watching.clone();
    let sampler = std::thread::spawn(move || {
        let (mut began, mut ended) = (None, None);
        while !watch.is_cancelled() && ended.is_none() {
            let restoring = health.restoring() > 0;
            match (restoring, began) {
                (true, None) => began = Some(Instant::now()),
                (false, Some(_)) => ended = Some(Instant::now()),
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        began.zip(ended).map(|(b, e)| (e - b).as_secs_f64())
    });
    let started = Instant::now();
    let running = tokio::spawn(engine.run(async move { until.cancelled().await }));
    let reply = client.send(Add { id: "k0".into(), n: -1 }).await?;
    let first_reply = started.elapsed().as_secs_f64();
    anyhow::ensure!(reply.is_accepted(), "the probe was rejected: {reply:?}");
    watching.cancel();
    let restore = sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    stop.cancel();
    running.await??;
    Ok(Takeover { first_reply, restore })
}

/// Creates the aggregate's one-partition topics under a fresh prefix.
async fn topics(config: &KafkaConfig, names: &mut Names, created: &mut Vec<String>, segment_mib: Option<u64>) -> anyhow::Result<String> {
    use herald_aggregate::Aggregate;
    let prefix = format!("{}.", names.next("rec"));
    let own = [format!("{prefix}{}", Counter::COMMANDS.name()), format!("{prefix}{}", Counter::EVENTS.name()), format!("{prefix}replies")];
    let mut specs: Vec<TopicSpec> = own.iter().map(|t| TopicSpec::new(t).partitions(1)).collect();
    if let Some(mib) = segment_mib {
        let changelog = TopicSpec::new(format!("{prefix}{}.changelog", Counter::NAME)).partitions(1).config("cleanup.policy", "compact");
        specs.push(changelog.config("segment.bytes", (mib << 20).to_string()).config("min.cleanable.dirty.ratio", "0.1"));
    }
    create_topics(config, &specs).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    created.extend(own);
    created.push(format!("{prefix}{}.changelog", Counter::NAME));
    Ok(prefix)
}

/// Waits until `group` has committed offset `n` on partition 0 of `topic`.
async fn wait_committed(bootstrap: &str, group: &str, topic: &str, n: u64) -> anyhow::Result<()> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).set("enable.auto.commit", "false").create()?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        if let Ok(done) = consumer.committed_offsets(tpl, Duration::from_secs(10))
            && let Some(Offset::Offset(at)) = done.find_partition(topic, 0).map(|p| p.offset())
            && at as u64 >= n
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{group} did not commit {n} on {topic} in an hour");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The benchmark.
pub async fn run(args: RecoveryArgs) -> anyhow::Result<()> {
    use herald_aggregate::Aggregate;
    let config = KafkaConfig::new(&args.bootstrap);
    let publisher = Publisher::new(&config, PublisherOptions::new("/herald/bench"))?;
    let mut names = Names::new();
    let mut created = Vec::new();
    // The takeover of an empty partition: what is not restore.
    let prefix = topics(&config, &mut names, &mut created, None).await?;
    let mut empty = Vec::new();
    for _ in 0..args.takeovers {
        empty.push(takeover(&config, &prefix, args.commit_ms).await?.first_reply);
    }
    let empty = median(empty);
    eprintln!("empty partition: first reply after {empty:.2} s");
    let mut rows = Vec::new();
    for &keys in &args.keys {
        let prefix = topics(&config, &mut names, &mut created, args.changelog_segment_mib).await?;
        let (commands, events, changelog) = (format!("{prefix}{}", Counter::COMMANDS.name()), format!("{prefix}{}", Counter::EVENTS.name()), format!("{prefix}{}.changelog", Counter::NAME));
        let loading = Instant::now();
        preload_commands(&publisher, &commands, None, args.events, keys).await?;
        eprintln!("{keys} keys: {} commands pre-loaded in {:.1} s", args.events, loading.elapsed().as_secs_f64());
        let mut s = settings(args.commit_ms);
        s.topic_prefix = prefix.clone();
        let engine = Engine::new(&config, Decider(Counter), s)?;
        let group = engine.group();
        let stop = CancellationToken::new();
        let until = stop.clone();
        let filling = Instant::now();
        let running = tokio::spawn(engine.run(async move { until.cancelled().await }));
        wait_committed(&args.bootstrap, &group, &commands, args.events).await?;
        let fill = filling.elapsed().as_secs_f64();
        stop.cancel();
        running.await??;
        eprintln!("{keys} keys: decided in {fill:.1} s ({:.0} commands/s)", args.events as f64 / fill);
        tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
        let bootstrap = args.bootstrap.clone();
        let (ev, cl) = (events.clone(), changelog.clone());
        let event_read = tokio::task::spawn_blocking(move || raw_read(&bootstrap, &ev)).await??;
        let bootstrap = args.bootstrap.clone();
        let changelog_read = tokio::task::spawn_blocking(move || raw_read(&bootstrap, &cl)).await??;
        anyhow::ensure!(event_read.records == args.events, "{events} holds {} events, not {}", event_read.records, args.events);
        eprintln!(
            "{keys} keys: events {} records {:.0} MB read in {:.2} s; changelog {} records {:.0} MB read in {:.2} s",
            event_read.records,
            event_read.bytes as f64 / 1e6,
            event_read.seconds,
            changelog_read.records,
            changelog_read.bytes as f64 / 1e6,
            changelog_read.seconds
        );
        let mut takeovers = Vec::new();
        for i in 0..args.takeovers {
            let t = takeover(&config, &prefix, args.commit_ms).await?;
            eprintln!("{keys} keys: takeover {}: first reply after {:.2} s, restore {}", i + 1, t.first_reply, t.restore.map_or("not seen".into(), |r| format!("{r:.2} s")));
            takeovers.push(t);
        }
        rows.push((keys, fill, event_read, changelog_read, takeovers));
        let _ = broker::delete_topics(&args.bootstrap, &created[3..]).await;
        created.truncate(3);
    }
    let _ = broker::delete_topics(&args.bootstrap, &created).await;
    println!("\n{} events (one per command) in one command partition; engine defaults (pipelined, max batch 1000), commit interval {} ms, 64 remembered answers; {} takeovers each", args.events, args.commit_ms, args.takeovers);
    if let Some(mib) = args.changelog_segment_mib {
        println!("changelog created with segment.bytes {mib} MiB, min.cleanable.dirty.ratio 0.1; {} s between the fill and the reads", args.settle_s);
    }
    println!("{}\n", Machine::current());
    println!("takeover of an empty partition (group join, producer init, no state): first reply after {empty:.2} s (median)\n");
    println!("| aggregates | fill: commands/s | event partition: records, MB, raw read s | changelog partition: records, MB, raw read s | restore s (median, min–max) | start → first reply s (median) |");
    println!("|---|---|---|---|---|---|");
    for (keys, fill, e, c, t) in rows {
        let restores: Vec<f64> = t.iter().filter_map(|t| t.restore).collect();
        let (lo, hi) = restores.iter().fold((f64::INFINITY, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        println!(
            "| {keys} | {:.0} | {}, {:.0}, {:.2} | {}, {:.0}, {:.2} | {:.2} ({lo:.2}–{hi:.2}) | {:.2} |",
            args.events as f64 / fill,
            e.records,
            e.bytes as f64 / 1e6,
            e.seconds,
            c.records,
            c.bytes as f64 / 1e6,
            c.seconds,
            median(restores.clone()),
            median(t.iter().map(|t| t.first_reply).collect())
        );
    }
    Ok(())
}
