//! `react aggregate`: an aggregate on the engine (herald-aggregate's `Decider`) against the
//! exactly-once reaction step, in the same run, with the same engine settings.
//!
//! Both decide one input into one event with a counter per key; the aggregate also writes
//! a reply per command (to the topic the command names) and keeps its version and recent
//! answers in its state. Per round (runs 1 and 2 in the order step, aggregate, remembering
//! 1 in odd rounds and the reverse in even ones):
//! 1. **step**: `Ping`s pre-loaded, the step's engine (in this process) reacts to all of
//!    them; the rate is taken from 10 % to 100 % of the `Pong`s visible to a
//!    read_committed reader;
//! 2. **aggregate**: the same number of `Add` commands pre-loaded (with `ce_replyto`), the
//!    aggregate's engine decides them; the rate from 10 % to 100 % of the replies visible;
//!    the same with `REMEMBERED = 1` ([`LeanCounter`]), to see what the stored recent
//!    replies cost;
//! 3. **with replies, closed loop**: `--senders` concurrent `CommandClient::send`s for
//!    `--seconds` against a running aggregate: commands/s and latency from send to reply.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_aggregate::{Aggregate, CommandClient, Decider, Rejection};
use herald_bench::broker::{self, Names};
use herald_bench::machine::{CpuTime, Machine};
use herald_bench::stats::Summary;
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_choreography::engine::{Engine, EngineSettings};
use herald_choreography::Participant;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Header;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::step;

/// `react aggregate` arguments.
#[derive(Debug, clap::Args)]
pub struct AggregateArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Inputs per throughput run.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Distinct keys (aggregates).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Commit interval in ms (both engines).
    #[arg(long, default_value_t = 100)]
    commit_ms: u64,
    /// Concurrent senders of the closed-loop run.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Length of the closed-loop run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Run only the aggregate's throughput runs (no step, no closed loop): for profiling.
    #[arg(long)]
    aggregate_only: bool,
    /// A librdkafka property for every client, `key=value` (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    property: Vec<String>,
}

/// `bench.aggregate.Add`: add `n` to counter `id`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Add {
    /// The counter.
    pub id: String,
    /// What to add.
    pub n: i64,
}

/// `bench.aggregate.Added`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Added {
    id: String,
    n: i64,
}

impl herald_bus::Event for Add {
    const TYPE: &'static str = "bench.aggregate.Add";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Add","namespace":"bench.aggregate","fields":[{"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

impl herald_bus::Event for Added {
    const TYPE: &'static str = "bench.aggregate.Added";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Added","namespace":"bench.aggregate","fields":[{"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

herald_bus::family! {
    /// The counter's commands.
    #[derive(Debug)]
    pub enum CounterCommand { Add(Add) }
}

herald_bus::family! {
    /// The counter's events.
    #[derive(Debug, Clone, serde::Serialize)]
    #[serde(untagged)]
    pub enum CounterEvent { Added(Added) }
}

/// A counter per key: the step's work as an aggregate.
#[derive(Debug, Clone, Copy)]
pub struct Counter;

impl Aggregate for Counter {
    const NAME: &'static str = "bench-aggregate";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type State = step::Seen;
    const COMMANDS: Topic<CounterCommand> = Topic::new("bench.aggregate.commands");
    const EVENTS: Topic<CounterEvent> = Topic::new("bench.aggregate.events");

    fn decide(&self, _: &step::Seen, command: CounterCommand) -> Result<Vec<CounterEvent>, Rejection> {
        let CounterCommand::Add(add) = command;
        Ok(vec![CounterEvent::Added(Added { id: add.id, n: add.n })])
    }

    fn evolve(&self, seen: step::Seen, _: &CounterEvent) -> step::Seen {
        step::Seen { n: seen.n + 1 }
    }
}

/// [`Counter`] remembering only its last reply (the default is 64): how much of the
/// aggregate's cost is its stored recent replies.
#[derive(Debug, Clone, Copy)]
pub struct LeanCounter;

impl Aggregate for LeanCounter {
    const NAME: &'static str = "bench-aggregate-lean";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type State = step::Seen;
    const COMMANDS: Topic<CounterCommand> = Counter::COMMANDS;
    const EVENTS: Topic<CounterEvent> = Counter::EVENTS;
    const REMEMBERED: usize = 1;

    fn decide(&self, seen: &step::Seen, command: CounterCommand) -> Result<Vec<CounterEvent>, Rejection> {
        Counter.decide(seen, command)
    }

    fn evolve(&self, seen: step::Seen, event: &CounterEvent) -> step::Seen {
        Counter.evolve(seen, event)
    }
}

/// One pre-loaded aggregate run of `A` under a fresh prefix: its rate, and its prefix.
async fn preloaded_run<A: Aggregate<Command = CounterCommand>>(aggregate: A, config: &KafkaConfig, publisher: &Publisher, names: &mut Names, created: &mut Vec<String>, args: &AggregateArgs) -> anyhow::Result<(Measured, String)> {
    let prefix = format!("{}.", names.next("agg"));
    let (commands, events, replies) = (format!("{prefix}{}", A::COMMANDS.name()), format!("{prefix}{}", A::EVENTS.name()), format!("{prefix}replies"));
    for t in [&commands, &events, &replies] {
        broker::create_topic(config, t).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    created.extend([commands.clone(), events.clone(), replies.clone(), format!("{prefix}{}.changelog", A::NAME)]);
    preload_commands(publisher, &commands, Some(&replies), args.events, args.keys).await?;
    let mut s = settings(args.commit_ms);
    s.topic_prefix = prefix.clone();
    let engine = Engine::new(config, Decider(aggregate), s)?;
    Ok((measure(config, engine, &replies, args.events).await?, prefix))
}

/// The engine settings of every run (fresh group, from the earliest offsets).
pub fn settings(commit_ms: u64) -> EngineSettings {
    let mut settings = EngineSettings::new("bench");
    settings.commit_interval = Duration::from_millis(commit_ms);
    settings.static_membership = false;
    settings.consumer_properties.push(("auto.offset.reset".into(), "earliest".into()));
    settings
}

/// A run's rate and its CPU per output, from 10 % to 100 % of its outputs.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    per_second: f64,
    /// Microseconds of CPU per output: this process's (the engine and the counting
    /// reader), and the whole machine's (the broker too).
    process_us: f64,
    machine_us: f64,
}

/// Runs `engine` until `expected` records are visible on `counted` (read_committed); the
/// rate and CPU per output from 10 % to 100 % of them.
async fn measure<P: Participant>(config: &KafkaConfig, engine: Engine<P>, counted: &str, expected: u64) -> anyhow::Result<Measured> {
    let consumer: StreamConsumer = config.client_config(&[("group.id", "herald-bench-counter"), ("enable.auto.commit", "false"), ("isolation.level", "read_committed")]).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..broker::PARTITIONS {
        tpl.add_partition_offset(counted, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let stop = CancellationToken::new();
    let until = stop.clone();
    let running = tokio::spawn(engine.run(async move { until.cancelled().await }));
    let (mut seen, mut from) = (0u64, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < expected {
        anyhow::ensure!(Instant::now() < deadline, "only {seen} of {expected} outputs on {counted} in 600 s");
        match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            Ok(Ok(_)) => seen += 1,
            Ok(Err(e)) => anyhow::bail!("reading {counted}: {e}"),
            Err(_) => continue,
        }
        if from.is_none() && seen >= expected / 10 {
            from = Some((Instant::now(), seen, CpuTime::now()));
        }
    }
    let (start, at, cpu) = from.ok_or_else(|| anyhow::anyhow!("no outputs"))?;
    let (elapsed, cpu) = (start.elapsed(), CpuTime::now().since(cpu));
    stop.cancel();
    running.await??;
    let outputs = (seen - at).max(1) as f64;
    Ok(Measured { per_second: outputs / elapsed.as_secs_f64().max(1e-9), process_us: cpu.process * 1e6 / outputs, machine_us: cpu.machine * 1e6 / outputs })
}

/// Pre-loads `n` commands on `topic` (keys `k0..`), each naming `replies` when given.
pub async fn preload_commands(publisher: &Publisher, topic: &str, replies: Option<&str>, n: u64, keys: u64) -> anyhow::Result<()> {
    let commands: Topic<CounterCommand> = Topic::named(topic);
    let mut pending = Vec::new();
    for i in 0..n {
        let add = Add { id: format!("k{}", i % keys), n: i as i64 };
        let meta = publisher.metadata_for(&add);
        let mut record = publisher.encode(&commands, &add, &meta).await?;
        if let Some(replies) = replies {
            record.headers = record.headers.insert(Header { key: herald_aggregate::headers::REPLY_TO, value: Some(replies) });
        }
        pending.push(publisher.send_record(record));
        if pending.len() >= 5_000 {
            for r in futures::future::join_all(pending.drain(..)).await {
                r?;
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r?;
    }
    Ok(())
}

/// One run of the reaction step on fresh topics: its rate.
async fn step_run(config: &KafkaConfig, publisher: &Publisher, names: &mut Names, created: &mut Vec<String>, args: &AggregateArgs) -> anyhow::Result<Measured> {
    let (input, output, group) = (names.next("agg.step-in"), names.next("agg.step-out"), names.next("agg.step-group"));
    for t in [&input, &output] {
        broker::create_topic(config, t).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    created.extend([input.clone(), output.clone(), format!("{group}.changelog")]);
    let topic: Topic<step::Step> = Topic::named(&input);
    let pings: Vec<step::Ping> = (0..args.events).map(|i| step::Ping { id: format!("k{}", i % args.keys), n: i as i64 }).collect();
    for chunk in pings.chunks(50_000) {
        for result in publisher.publish_all(&topic, chunk).await {
            result?;
        }
    }
    let mut s = settings(args.commit_ms);
    s.group = Some(group.clone());
    s.changelog = Some(format!("{group}.changelog"));
    let engine = Engine::new(config, step::Counter::new(&input, &output), s)?;
    measure(config, engine, &output, args.events).await
}

/// Latency percentile `q` of sorted `values`.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The benchmark.
pub async fn run(args: AggregateArgs) -> anyhow::Result<()> {
    let config = KafkaConfig::new(&args.bootstrap).with_pairs(&args.property)?;
    let publisher = Publisher::new(&config, PublisherOptions::new("/herald/bench"))?;
    let mut names = Names::new();
    let mut created = Vec::new();
    let (mut steps, mut aggregates, mut leans, mut closed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // The three runs, in an order that alternates between rounds (the later runs of a
        // round meet a broker with more topics and logs: the order must not favour one).
        let (mut step, mut aggregate, mut lean, mut prefix) = (Measured::default(), Measured::default(), Measured::default(), String::new());
        let order: [u8; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for run in order {
            if args.aggregate_only && run != 1 {
                continue;
            }
            match run {
                0 => step = step_run(&config, &publisher, &mut names, &mut created, &args).await?,
                1 => (aggregate, prefix) = preloaded_run(Counter, &config, &publisher, &mut names, &mut created, &args).await?,
                _ => lean = preloaded_run(LeanCounter, &config, &publisher, &mut names, &mut created, &args).await?.0,
            }
        }
        if args.aggregate_only {
            eprintln!("round {}: aggregate {:.0} commands/s; CPU µs per command (process / machine) {:.1} / {:.1}", round + 1, aggregate.per_second, aggregate.process_us, aggregate.machine_us);
            aggregates.push(aggregate);
            let _ = broker::delete_topics(&args.bootstrap, &created).await;
            created.clear();
            continue;
        }
        let (commands, replies) = (format!("{prefix}{}", Counter::COMMANDS.name()), format!("{prefix}replies"));
        let mut s = settings(args.commit_ms);
        s.topic_prefix = prefix.clone();
        eprintln!(
            "round {}: step {:.0} ev/s, aggregate {:.0} commands/s ({:.2}), remembering 1: {:.0} ({:.2}); CPU µs per output (process / machine): step {:.1} / {:.1}, aggregate {:.1} / {:.1}, remembering 1 {:.1} / {:.1}",
            round + 1,
            step.per_second,
            aggregate.per_second,
            aggregate.per_second / step.per_second,
            lean.per_second,
            lean.per_second / step.per_second,
            step.process_us,
            step.machine_us,
            aggregate.process_us,
            aggregate.machine_us,
            lean.process_us,
            lean.machine_us
        );
        steps.push(step);
        aggregates.push(aggregate);
        leans.push(lean);

        // Closed loop with replies, on the same aggregate's topics (its state restored).
        let engine = Engine::new(&config, Decider(Counter), s)?;
        let stop = CancellationToken::new();
        let until = stop.clone();
        let running = tokio::spawn(engine.run(async move { until.cancelled().await }));
        let client = CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies.clone()).await?.with_timeout(Duration::from_secs(30));
        // Warm-up: the engine joins its group and restores before the first reply.
        client.send(Add { id: "warm-up".into(), n: 0 }).await?;
        let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let end = Instant::now() + Duration::from_secs(args.seconds);
        let mut senders = tokio::task::JoinSet::new();
        for s in 0..args.senders {
            let (client, latencies, keys, stride) = (client.clone(), latencies.clone(), args.keys, args.senders as u64);
            senders.spawn(async move {
                let mut i = s as u64;
                while Instant::now() < end {
                    let started = Instant::now();
                    client.send(Add { id: format!("k{}", i % keys), n: i as i64 }).await?;
                    latencies.lock().unwrap_or_else(|p| p.into_inner()).push(started.elapsed());
                    i += stride;
                }
                anyhow::Ok(())
            });
        }
        let started = Instant::now();
        while let Some(done) = senders.join_next().await {
            done??;
        }
        let elapsed = started.elapsed();
        stop.cancel();
        running.await??;
        let mut latencies = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        latencies.sort();
        let rate = latencies.len() as f64 / elapsed.as_secs_f64();
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        eprintln!("round {}: closed loop {} senders: {rate:.0} commands/s, p50 {p50:?}, p99 {p99:?}", round + 1, args.senders);
        closed.push((rate, p50, p99));
        let _ = broker::delete_topics(&args.bootstrap, &created).await;
        created.clear();
    }
    let rate = |v: &[Measured]| v.iter().map(|m| m.per_second).collect::<Vec<_>>();
    if args.aggregate_only {
        let summary = Summary::of(&rate(&aggregates)).map_or("–".to_owned(), |s| format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max));
        println!("\naggregate alone, {} commands per run, {} rounds: {summary} commands/s\n{}", args.events, args.rounds, Machine::current());
        return Ok(());
    }
    let ratios: Vec<f64> = aggregates.iter().zip(&steps).map(|(a, s)| a.per_second / s.per_second).collect();
    let cpu_ratios: Vec<f64> = aggregates.iter().zip(&steps).map(|(a, s)| s.machine_us / a.machine_us).collect();
    let show = |v: &[f64]| Summary::of(v).map_or("–".to_owned(), |s| format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max));
    let show1 = |v: &[f64]| Summary::of(v).map_or("–".to_owned(), |s| format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max));
    let (steps_rate, aggregates_rate, leans_rate) = (rate(&steps), rate(&aggregates), rate(&leans));
    println!("\n{} inputs per run over {} partitions, {} keys, {} rounds, commit interval {} ms, engine defaults otherwise (pipelined, max batch 1000)", args.events, broker::PARTITIONS, args.keys, args.rounds, args.commit_ms);
    println!("{}\n", Machine::current());
    println!("| run | per second, median (min–max) |");
    println!("|---|---|");
    println!("| reaction step (Ping → Pong), exactly once | {} |", show(&steps_rate));
    println!("| aggregate (command → event + reply), exactly once | {} |", show(&aggregates_rate));
    println!("| aggregate / step, paired by round | {} |", Summary::of(&ratios).map_or("–".to_owned(), |s| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)));
    let lean_ratios: Vec<f64> = leans.iter().zip(&steps).map(|(a, s)| a.per_second / s.per_second).collect();
    println!("| aggregate remembering 1 reply (REMEMBERED = 1), exactly once | {} |", show(&leans_rate));
    println!("| aggregate remembering 1 / step, paired by round | {} |", Summary::of(&lean_ratios).map_or("–".to_owned(), |s| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)));
    let cpu = |v: &[Measured], f: fn(&Measured) -> f64| v.iter().map(f).collect::<Vec<_>>();
    println!("| CPU µs per output, this process (engine and counting reader): step / aggregate / remembering 1 | {} / {} / {} |", show1(&cpu(&steps, |m| m.process_us)), show1(&cpu(&aggregates, |m| m.process_us)), show1(&cpu(&leans, |m| m.process_us)));
    println!("| CPU µs per output, the machine (broker too): step / aggregate / remembering 1 | {} / {} / {} |", show1(&cpu(&steps, |m| m.machine_us)), show1(&cpu(&aggregates, |m| m.machine_us)), show1(&cpu(&leans, |m| m.machine_us)));
    println!("| step's machine CPU per event / aggregate's per command, paired by round | {} |", Summary::of(&cpu_ratios).map_or("–".to_owned(), |s| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)));
    let rates: Vec<f64> = closed.iter().map(|c| c.0).collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| closed loop, {} senders through CommandClient: commands/s with replies | {} |", args.senders, show(&rates));
    println!("| closed loop: p50 / p99 ms per round | {} |", closed.iter().map(|c| format!("{:.0} / {:.0}", ms(c.1), ms(c.2))).collect::<Vec<_>>().join(", "));
    Ok(())
}
