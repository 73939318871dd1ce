//! Herald against raw rdkafka on a real broker, in one run.
//!
//! ```text
//! scripts/kafka start                                  # a broker on 127.0.0.1:9092
//! cargo build --release -p herald-bench
//! cargo run --release -p herald-bench --bin bus -- --events 200000 --rounds 5
//! ```
//!
//! What it shows, per round (the order of the variants rotates from round to round):
//! - **produce**: events/s of Herald's `publish_all`, of a loop of Herald's `publish` with
//!   at most 10 000 calls at once, and of a raw rdkafka `FutureProducer` with the same
//!   properties and in-flight bound sending the same bytes: built in its loop (CloudEvents
//!   headers, frame, datum encoded with serde_avro_fast: the baseline, the fastest Rust
//!   Avro), or the same with apache-avro's `Value` path (for scale), or encoded
//!   beforehand (the transport ceiling); and Kafka's own
//!   `kafka-producer-perf-test` (Java client) on the same broker, for scale.
//! - **consume**: events/s of Herald's `Consumer` (decoding into `OrderEvent`, CloudEvents
//!   metadata, per-partition workers, offsets stored after each record), of a raw
//!   `StreamConsumer` that decodes with serde_avro_fast (the baseline), with apache-avro's
//!   `Value` path (for scale), of one that decodes with serde_avro_fast and also reads
//!   every header (insight: what reading CloudEvents headers costs), and of one that does
//!   not decode (the ceiling).
//!
//! At the end: medians and spreads over the rounds of rates and of CPU per event (timed
//! window and whole run), the per-round ratios Herald/baseline against the goal of 0.9
//! with the ratios to the transport ceiling beside them, the machine, the allocator, and
//! the command lines. Every topic it creates is named
//! `herald.bench.*` and deleted at the end (unless `--keep-topics`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use herald_bench::broker::{self, Clients, Names};
use herald_bench::machine::{CpuTime, Machine};
use herald_bench::stats::{paired_ratios, Summary};
use herald_bench::workload::{record_size, Workload, FRAME_LEN};
use herald_bench::{consume, perf_test, produce, Error};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_shop::OrderEvent;

/// The goal: Herald at least this fraction of raw rdkafka's throughput.
const GOAL: f64 = 0.9;

/// The publisher's CPU goal: at most this many times raw rdkafka's CPU per event.
const CPU_GOAL: f64 = 1.2;

#[derive(Debug, Parser)]
#[command(about = "Herald's publisher and consumer against raw rdkafka on a real broker")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Events per run.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Rounds; each round runs every variant once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Target encoded payload size in bytes (single-object frame + Avro datum).
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Which half to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    only: Part,
    /// Skip kafka-producer-perf-test.
    #[arg(long)]
    no_perf_test: bool,
    /// Herald's Kafka script (runs kafka-producer-perf-test).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka"))]
    kafka_script: PathBuf,
    /// Longest a single run may take before it counts as stalled, in seconds.
    #[arg(long, default_value_t = 300)]
    deadline: u64,
    /// Keep the benchmark's topics instead of deleting them at the end.
    #[arg(long)]
    keep_topics: bool,
    /// Extra librdkafka property for every client, Herald's and the raw ones alike
    /// (repeatable), e.g. `-X fetch.wait.max.ms=10`.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    property: Vec<String>,
    /// Diagnostic: Herald's consumer buffer in bytes (Herald's default is 64 MiB).
    #[arg(long)]
    max_buffered_bytes: Option<usize>,
    /// Run only the variants whose name contains this text (repeatable), e.g.
    /// `--variant herald` to profile Herald's clients alone.
    #[arg(long)]
    variant: Vec<String>,
    /// Consume from this existing topic (holding at least `--events` records, e.g. one a
    /// run with `--keep-topics` filled) instead of filling a new one: for profiling the
    /// consumers without the fill in the profile.
    #[arg(long)]
    consume_from: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    All,
    Produce,
    Consume,
}

const HERALD_ALL: &str = "herald publish_all";
const HERALD_LOOP: &str = "herald publish x10k";
const RAW_PRODUCER: &str = "raw FutureProducer";
const RAW_ENCODE: &str = "raw FutureProducer+fast";
const RAW_ENCODE_VALUE: &str = "raw FutureProducer+avro";
const PERF_TEST: &str = "kafka-producer-perf-test";
const HERALD_CONSUMER: &str = "herald Consumer";
const RAW_DECODE: &str = "raw StreamConsumer+fast";
const RAW_DECODE_VALUE: &str = "raw StreamConsumer+avro";
const RAW_DECODE_HEADERS: &str = "raw StreamConsumer+fast+hdr";
const RAW_NO_DECODE: &str = "raw StreamConsumer";

/// Rates per variant, one per round, in round order (NaN for a failed run).
type Rates = BTreeMap<&'static str, Vec<f64>>;

/// Which allocator the numbers used: the binary links the system's (glibc malloc); a
/// run under `LD_PRELOAD=libjemalloc.so.2` (or another malloc) says so here.
fn allocator() -> String {
    match std::env::var("LD_PRELOAD") {
        Ok(preload) if preload.contains("jemalloc") => format!("jemalloc (LD_PRELOAD={preload})"),
        Ok(preload) if preload.contains("mimalloc") => format!("mimalloc (LD_PRELOAD={preload})"),
        Ok(preload) if !preload.is_empty() => format!("system malloc, LD_PRELOAD={preload}"),
        _ => "glibc malloc (the system's; nothing preloaded)".to_owned(),
    }
}

/// The 1-minute load average, to tell a quiet machine from a busy one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().map(str::to_owned)).unwrap_or_else(|| "?".into())
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut bench = Bench::new(args).await?;
        bench.run().await
    })
}

/// One benchmark run: settings, the workload, and what was measured so far.
struct Bench {
    args: Args,
    clients: Clients,
    config: KafkaConfig,
    deadline: Duration,
    workload: Workload,
    /// Encodes records for the raw producer (it never sends).
    encoder: Publisher,
    names: Names,
    topics: Vec<String>,
    rates: Rates,
    /// CPU of this process per event in the timed window (first to last event), µs, per
    /// variant and round (NaN for a failed run).
    cpu: Rates,
    /// The same over the whole run of a variant (client start, join, shutdown included).
    cpu_run: Rates,
    joins: Rates,
    perf_command: Option<Vec<String>>,
}

impl Bench {
    async fn new(args: Args) -> Result<Bench, Error> {
        let overrides = args
            .property
            .iter()
            .map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("-X expects key=value, got {p:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let clients = Clients::new(&args.bootstrap, overrides);
        let config = clients.herald();
        let encoder = Publisher::new(&config, PublisherOptions::new("/herald/bench"))?;
        Ok(Bench {
            deadline: Duration::from_secs(args.deadline),
            workload: Workload::new(args.events, args.payload),
            clients,
            config,
            encoder,
            names: Names::new(),
            topics: Vec::new(),
            rates: Rates::new(),
            cpu: Rates::new(),
            cpu_run: Rates::new(),
            joins: Rates::new(),
            perf_command: None,
            args,
        })
    }

    async fn run(&mut self) -> Result<(), Error> {
        let machine = Machine::current();
        let first = self.workload.events.first().ok_or("--events must be at least 1")?;
        let sample_topic = Topic::<OrderEvent>::named("herald.bench.sample");
        let sample = self.encoder.encode(&sample_topic, first, &self.encoder.metadata_for(first)).await?;
        println!("machine: {machine}");
        println!("broker:  {} ({} partitions per topic), extra properties: {:?}", self.args.bootstrap, broker::PARTITIONS, self.clients.overrides);
        println!(
            "events:  {} OrderPlaced per run; payload {} B (frame + Avro datum), key {} B, {} headers, record {} B (key + value + headers)",
            self.args.events,
            self.workload.payload_size,
            sample.key.as_ref().map_or(0, Vec::len),
            rdkafka::message::Headers::count(&sample.headers),
            record_size(&sample)
        );
        println!("malloc:  {}", allocator());
        println!("rounds:  {} (the order of the variants rotates each round)\n", self.args.rounds);

        let result = self.measure().await;
        if result.is_ok() {
            self.report();
            println!("\nmachine: {machine}");
            println!("command: {}", std::env::args().collect::<Vec<_>>().join(" "));
            if let Some(command) = &self.perf_command {
                println!("perf-test command: {}", command.join(" "));
            }
        }
        if !self.args.keep_topics {
            // Herald's consumer created a dead-letter topic for the consume topic.
            let dead_letter: Vec<String> = self.topics.iter().filter(|t| t.contains(".consume.")).map(|t| format!("{t}.dlq")).collect();
            self.topics.extend(dead_letter);
            if let Err(e) = broker::delete_topics(&self.args.bootstrap, &self.topics).await {
                eprintln!("warning: {e}");
            }
        }
        result
    }

    async fn measure(&mut self) -> Result<(), Error> {
        if self.args.only != Part::Consume {
            self.produce_rounds().await?;
        }
        if self.args.only != Part::Produce {
            self.consume_rounds().await?;
        }
        Ok(())
    }

    /// A new topic of this run.
    async fn topic(&mut self, what: &str) -> Result<Topic<OrderEvent>, Error> {
        let name = self.names.next(what);
        broker::create_topic(&self.config, &name).await?;
        self.topics.push(name.clone());
        Ok(Topic::named(name))
    }

    async fn produce_rounds(&mut self) -> Result<(), Error> {
        let mut variants = vec![HERALD_ALL, RAW_ENCODE, HERALD_LOOP, RAW_PRODUCER, RAW_ENCODE_VALUE];
        if !self.args.no_perf_test {
            variants.push(PERF_TEST);
        }
        variants.retain(|v| self.wanted(v));
        if variants.is_empty() {
            return Ok(());
        }
        println!("== produce: {} events per run", self.args.events);
        for round in 0..self.args.rounds {
            let mut order = variants.clone();
            order.rotate_left(round % variants.len());
            for variant in order {
                let topic = self.topic("produce").await?;
                let load = load_average();
                let cpu_before = CpuTime::now();
                let result = self.produce_once(variant, &topic).await;
                let cpu = CpuTime::now().since(cpu_before);
                let n = self.args.events as f64;
                // kafka-producer-perf-test runs in another process: no CPU figure here.
                let (steady, whole) = match &result {
                    Ok((_, steady, _)) if variant != PERF_TEST => (*steady, cpu.process * 1e6 / n),
                    _ => (f64::NAN, f64::NAN),
                };
                self.cpu.entry(variant).or_default().push(steady);
                self.cpu_run.entry(variant).or_default().push(whole);
                let result = result.map(|(rate, _, detail)| {
                    (rate, format!("{detail}; CPU per event {steady:.2} µs timed, {whole:.2} µs whole run, {:.2} µs machine; {:.2} context switches per event; load {load}", cpu.machine * 1e6 / n, cpu.switches / n))
                });
                record(&mut self.rates, round, variant, result);
            }
        }
        Ok(())
    }

    /// One publish run of `variant` into the empty `topic`: its rate, its CPU per event in
    /// µs over the timed run (NaN for the Java client), and a detail line.
    async fn produce_once(&mut self, variant: &str, topic: &Topic<OrderEvent>) -> Result<(f64, f64, String), Error> {
        let (events, deadline) = (&self.workload.events, self.deadline);
        let run = match variant {
            HERALD_ALL | HERALD_LOOP => {
                let warm_up = herald_bench::workload::order(u64::MAX / 2, 0);
                let publisher = produce::herald_publisher(&self.config, topic, &warm_up).await?;
                if variant == HERALD_ALL {
                    produce::herald_publish_all(&publisher, topic, events, deadline).await?
                } else {
                    produce::herald_publish_loop(&publisher, topic, events, deadline).await?
                }
            }
            RAW_PRODUCER | RAW_ENCODE | RAW_ENCODE_VALUE => {
                let mut records = self.workload.encode_all(&self.encoder, topic).await?;
                let warm_up = records.last().ok_or("no events")?.clone();
                let producer = produce::raw_producer(&self.clients, warm_up).await?;
                let run = if variant == RAW_PRODUCER {
                    produce::raw_send(&producer, std::mem::take(&mut records), deadline).await?
                } else {
                    let encode = if variant == RAW_ENCODE { produce::Encode::Fast } else { produce::Encode::Value };
                    let frame = records.first().and_then(|r| r.payload.as_deref()?.get(..FRAME_LEN)).ok_or("record shorter than its frame")?.to_vec();
                    drop(std::mem::take(&mut records));
                    produce::raw_encode_and_send(&producer, topic.name(), events, &frame, encode, deadline).await?
                };
                tokio::task::spawn_blocking(move || drop(producer)).await?;
                run
            }
            _ => {
                let command = perf_test::command_line(&self.args.kafka_script, &self.args.bootstrap, topic.name(), events.len() as u64, self.workload.payload_size);
                self.perf_command = Some(command.clone());
                let run = tokio::task::spawn_blocking(move || perf_test::run(&command)).await??;
                return Ok((run.rate, f64::NAN, format!("{:.2} MiB/s, {:.0} ms avg latency", run.mib_per_sec, run.avg_latency_ms)));
            }
        };
        Ok((run.rate(), run.cpu_per_event(), format!("{:.2} s, {} failed", run.elapsed.as_secs_f64(), run.failed)))
    }

    async fn consume_rounds(&mut self) -> Result<(), Error> {
        if ![HERALD_CONSUMER, RAW_DECODE, RAW_NO_DECODE, RAW_DECODE_VALUE, RAW_DECODE_HEADERS].iter().any(|v| self.wanted(v)) {
            return Ok(());
        }
        let topic = match self.args.consume_from.clone() {
            Some(existing) => Topic::named(existing),
            None => {
                let topic = self.topic("consume").await?;
                let mut records = self.workload.encode_all(&self.encoder, &topic).await?;
                let warm_up = records.pop().ok_or("no events")?;
                let producer = produce::raw_producer(&self.clients, warm_up).await?;
                let filled = produce::raw_send(&producer, records, self.deadline).await?;
                if filled.failed > 0 {
                    return Err(format!("pre-filling {}: {} records failed", topic.name(), filled.failed).into());
                }
                topic
            }
        };
        let n = self.args.events as u64;
        println!("\n== consume: {n} events per run from {}", topic.name());
        let variants: Vec<&'static str> = [HERALD_CONSUMER, RAW_DECODE, RAW_NO_DECODE, RAW_DECODE_VALUE, RAW_DECODE_HEADERS].into_iter().filter(|v| self.wanted(v)).collect();
        for round in 0..self.args.rounds {
            let mut order = variants.to_vec();
            order.rotate_left(round % variants.len());
            for variant in order {
                let group = self.names.next("group");
                let load = load_average();
                let cpu_before = CpuTime::now();
                let run = match variant {
                    HERALD_CONSUMER => consume::herald(&self.config, &topic, &group, n, self.args.max_buffered_bytes, self.deadline).await,
                    RAW_DECODE => consume::raw(&self.clients, topic.name(), &group, n, consume::Decode::Fast, self.deadline).await,
                    RAW_DECODE_VALUE => consume::raw(&self.clients, topic.name(), &group, n, consume::Decode::Value, self.deadline).await,
                    RAW_DECODE_HEADERS => consume::raw(&self.clients, topic.name(), &group, n, consume::Decode::FastHeaders, self.deadline).await,
                    _ => consume::raw(&self.clients, topic.name(), &group, n, consume::Decode::None, self.deadline).await,
                };
                let cpu = CpuTime::now().since(cpu_before);
                if let Ok(run) = &run {
                    self.joins.entry(variant).or_default().push(run.join.as_secs_f64());
                }
                self.cpu.entry(variant).or_default().push(run.as_ref().map_or(f64::NAN, consume::ConsumeRun::steady_cpu_per_event));
                self.cpu_run.entry(variant).or_default().push(run.as_ref().map_or(f64::NAN, |r| cpu.process * 1e6 / r.events as f64));
                let result = run.map(|r| {
                    let detail = format!(
                        "join {:.2} s, {:.2} s for the rest; {:.0}/s with join; {} pauses; CPU per event {:.2} µs first to last record, {:.2} µs whole run, {:.2} µs machine; load {load}",
                        r.join.as_secs_f64(),
                        r.steady.as_secs_f64(),
                        r.rate_with_join(),
                        r.pauses,
                        r.steady_cpu_per_event(),
                        cpu.process * 1e6 / r.events as f64,
                        cpu.machine * 1e6 / r.events as f64,
                    );
                    (r.rate(), detail)
                });
                record(&mut self.rates, round, variant, result);
            }
        }
        Ok(())
    }

    /// True when `variant` is to run (see `--variant`).
    fn wanted(&self, variant: &str) -> bool {
        self.args.variant.is_empty() || self.args.variant.iter().any(|w| variant.contains(w.as_str()))
    }

    fn report(&self) {
        let (rates, cpu, joins, rounds) = (&self.rates, &self.cpu, &self.joins, self.args.rounds);
        let mib = |rate: f64| rate * self.workload.payload_size as f64 / (1024.0 * 1024.0);
        println!("\n== summary: median over {rounds} rounds [min .. max], spread = (max - min) / median");
        println!("   CPU = this process's CPU per event in µs while timed (first to last event), and over the whole run of the variant (client start, join, shutdown)");
        println!("{:<26} {:>10} {:>22} {:>7} {:>9} {:>22} {:>10}", "variant", "events/s", "[min .. max]", "spread", "MiB/s", "CPU timed [min..max]", "whole run");
        let groups: [&[&str]; 2] = [
            &[HERALD_ALL, HERALD_LOOP, RAW_ENCODE, RAW_PRODUCER, RAW_ENCODE_VALUE, PERF_TEST],
            &[HERALD_CONSUMER, RAW_DECODE, RAW_DECODE_HEADERS, RAW_NO_DECODE, RAW_DECODE_VALUE],
        ];
        for group in groups {
            for variant in group {
                let Some(s) = rates.get(variant).and_then(|r| Summary::of(r)) else { continue };
                let failed = rates[variant].iter().filter(|r| r.is_nan()).count();
                let cpu = cpu.get(variant).and_then(|c| Summary::of(c)).map_or_else(|| "-".to_owned(), |c| format!("{:.2} [{:.2}..{:.2}]", c.median, c.min, c.max));
                let whole = self.cpu_run.get(variant).and_then(|c| Summary::of(c)).map_or_else(|| "-".to_owned(), |c| format!("{:.2}", c.median));
                println!(
                    "{variant:<26} {:>10.0} {:>22} {:>6.0}% {:>9.1} {:>22} {:>10}{}",
                    s.median,
                    format!("[{:.0} .. {:.0}]", s.min, s.max),
                    s.spread() * 100.0,
                    mib(s.median),
                    cpu,
                    whole,
                    if failed > 0 { format!("  ({failed} runs failed)") } else { String::new() }
                );
            }
        }
        for (variant, join) in joins {
            if let Some(s) = Summary::of(join) {
                println!("  join time {variant:<26} median {:.2} s [{:.2} .. {:.2}]", s.median, s.min, s.max);
            }
        }
        // The goal: raw does the same work (Avro and, for the producer, the CloudEvents
        // headers) in its timed loop, with the fastest Rust Avro (serde_avro_fast): the
        // strongest baseline a user could write. Ceiling: raw does no Avro work at all
        // (records built before the timer; records not decoded). Scale: raw with
        // apache-avro's slower `Value` path; the Java client.
        println!("\n== Herald against the baseline (goal: rate >= {GOAL} of it) and the transport ceiling; per-round ratios, median [min .. max]");
        let herald = [(HERALD_ALL, RAW_ENCODE, RAW_PRODUCER), (HERALD_LOOP, RAW_ENCODE, RAW_PRODUCER), (HERALD_CONSUMER, RAW_DECODE, RAW_NO_DECODE)];
        for (h, baseline, ceiling) in herald {
            let Some(line) = ratio(rates, h, baseline) else { continue };
            let verdict = if line.median >= GOAL { "meets goal" } else { "BELOW GOAL" };
            println!("{h:<22} rate / {baseline:<24} {}  {verdict}", line.text());
            if let Some(c) = ratio(rates, h, ceiling) {
                println!("{h:<22} rate / {ceiling:<24} {}  (transport ceiling)", c.text());
            }
            // CPU per event: the consumer's goal is absolute (at most 2 µs), the
            // publisher's relative (at most 1.2x raw rdkafka's).
            for against in [baseline, ceiling] {
                if let Some(c) = ratio(cpu, h, against) {
                    // The publisher's CPU goal: at most 1.2x raw rdkafka sending the same
                    // records pre-encoded (the issue's yardstick).
                    let goal = match (h == HERALD_CONSUMER, against == ceiling) {
                        (false, true) if c.median <= CPU_GOAL => "  (goal <= 1.2: met)",
                        (false, true) => "  (goal <= 1.2: NOT met)",
                        _ => "",
                    };
                    println!("{h:<22} CPU  / {against:<24} {}{goal}", c.text());
                }
            }
        }
        if let Some(c) = cpu.get(HERALD_CONSUMER).and_then(|c| Summary::of(c)) {
            println!("herald Consumer CPU per event {:.2} µs [{:.2} .. {:.2}] first to last record  (goal <= 2 µs: {})", c.median, c.min, c.max, if c.median <= 2.0 { "met" } else { "NOT met" });
        }
        println!("\n== for scale");
        for (a, b) in [(HERALD_ALL, RAW_ENCODE_VALUE), (HERALD_LOOP, RAW_ENCODE_VALUE), (HERALD_CONSUMER, RAW_DECODE_VALUE), (HERALD_CONSUMER, RAW_DECODE_HEADERS), (RAW_PRODUCER, PERF_TEST)] {
            if let Some(r) = ratio(rates, a, b) {
                println!("{a:<22} rate / {b:<24} {}", r.text());
            }
        }
    }
}

/// Per-round ratios `a / b` of `values` (rates or CPU), summarized.
fn ratio(values: &Rates, a: &str, b: &str) -> Option<Summary> {
    let (va, vb) = (values.get(a)?, values.get(b)?);
    Summary::of(&paired_ratios(va, vb))
}

/// How a summary of ratios prints.
trait Text {
    fn text(&self) -> String;
}

impl Text for Summary {
    fn text(&self) -> String {
        format!("{:>5.2} [{:.2} .. {:.2}]", self.median, self.min, self.max)
    }
}

/// Prints one run and keeps its rate (NaN when it failed, so rounds stay paired).
fn record(rates: &mut Rates, round: usize, variant: &'static str, result: Result<(f64, String), Error>) {
    let rate = match result {
        Ok((rate, detail)) => {
            println!("  round {} {variant:<26} {rate:>10.0} ev/s   ({detail})", round + 1);
            rate
        }
        Err(e) => {
            println!("  round {} {variant:<26}     FAILED   ({e})", round + 1);
            f64::NAN
        }
    };
    rates.entry(variant).or_default().push(rate);
}
