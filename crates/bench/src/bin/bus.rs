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
//!   properties and in-flight bound sending the same bytes: encoded in its loop with
//!   serde_avro_fast (the baseline: the fastest Rust Avro), or with apache-avro's `Value`
//!   path (for scale), or encoded beforehand (the transport ceiling); and Kafka's own
//!   `kafka-producer-perf-test` (Java client) on the same broker, for scale.
//! - **consume**: events/s of Herald's `Consumer` (decoding into `OrderEvent`, CloudEvents
//!   metadata, per-partition workers, offsets stored after each record), of a raw
//!   `StreamConsumer` that decodes with serde_avro_fast (the baseline), with apache-avro's
//!   `Value` path (for scale), and of one that does not decode (the ceiling).
//!
//! At the end: medians and spreads over the rounds, the ratios Herald/raw against the
//! goal of 0.9, the machine, and the command lines. Every topic it creates is named
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
const RAW_NO_DECODE: &str = "raw StreamConsumer";

/// Rates per variant, one per round, in round order (NaN for a failed run).
type Rates = BTreeMap<&'static str, Vec<f64>>;

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
        println!("rounds:  {}\n", self.args.rounds);

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
        println!("== produce: {} events per run", self.args.events);
        for round in 0..self.args.rounds {
            let mut order = variants.clone();
            order.rotate_left(round % variants.len());
            for variant in order {
                let topic = self.topic("produce").await?;
                let cpu_before = CpuTime::now();
                let result = self.produce_once(variant, &topic).await.map(|(rate, detail)| {
                    let cpu = CpuTime::now().since(cpu_before);
                    let n = self.args.events as f64;
                    (rate, format!("{detail}; CPU per event {:.2} µs here, {:.2} µs machine; {:.2} context switches per event", cpu.process * 1e6 / n, cpu.machine * 1e6 / n, cpu.switches / n))
                });
                record(&mut self.rates, round, variant, result);
            }
        }
        Ok(())
    }

    /// One publish run of `variant` into the empty `topic`: its rate and a detail line.
    async fn produce_once(&mut self, variant: &str, topic: &Topic<OrderEvent>) -> Result<(f64, String), Error> {
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
                    let headers = std::mem::take(&mut records).into_iter().map(|r| r.headers).collect();
                    produce::raw_encode_and_send(&producer, topic.name(), events, headers, &frame, encode, deadline).await?
                };
                tokio::task::spawn_blocking(move || drop(producer)).await?;
                run
            }
            _ => {
                let command = perf_test::command_line(&self.args.kafka_script, &self.args.bootstrap, topic.name(), events.len() as u64, self.workload.payload_size);
                self.perf_command = Some(command.clone());
                let run = tokio::task::spawn_blocking(move || perf_test::run(&command)).await??;
                return Ok((run.rate, format!("{:.2} MiB/s, {:.0} ms avg latency", run.mib_per_sec, run.avg_latency_ms)));
            }
        };
        Ok((run.rate(), format!("{:.2} s, {} failed", run.elapsed.as_secs_f64(), run.failed)))
    }

    async fn consume_rounds(&mut self) -> Result<(), Error> {
        let topic = self.topic("consume").await?;
        let mut records = self.workload.encode_all(&self.encoder, &topic).await?;
        let warm_up = records.pop().ok_or("no events")?;
        let producer = produce::raw_producer(&self.clients, warm_up).await?;
        let filled = produce::raw_send(&producer, records, self.deadline).await?;
        if filled.failed > 0 {
            return Err(format!("pre-filling {}: {} records failed", topic.name(), filled.failed).into());
        }
        let n = self.args.events as u64;
        println!("\n== consume: {n} events per run from {}", topic.name());
        let variants = [HERALD_CONSUMER, RAW_DECODE, RAW_NO_DECODE, RAW_DECODE_VALUE];
        for round in 0..self.args.rounds {
            let mut order = variants.to_vec();
            order.rotate_left(round % variants.len());
            for variant in order {
                let group = self.names.next("group");
                let cpu_before = CpuTime::now();
                let run = match variant {
                    HERALD_CONSUMER => consume::herald(&self.config, &topic, &group, n, self.args.max_buffered_bytes, self.deadline).await,
                    RAW_DECODE => consume::raw(&self.clients, topic.name(), &group, n, consume::Decode::Fast, self.deadline).await,
                    RAW_DECODE_VALUE => consume::raw(&self.clients, topic.name(), &group, n, consume::Decode::Value, self.deadline).await,
                    _ => consume::raw(&self.clients, topic.name(), &group, n, consume::Decode::None, self.deadline).await,
                };
                let cpu = CpuTime::now().since(cpu_before);
                if let Ok(run) = &run {
                    self.joins.entry(variant).or_default().push(run.join.as_secs_f64());
                }
                let result = run.map(|r| {
                    let detail = format!(
                        "join {:.2} s, {:.2} s for the rest; {:.0}/s with join; {} pauses; CPU per event {:.2} µs here, {:.2} µs machine",
                        r.join.as_secs_f64(),
                        r.steady.as_secs_f64(),
                        r.rate_with_join(),
                        r.pauses,
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

    fn report(&self) {
        let (rates, joins, rounds) = (&self.rates, &self.joins, self.args.rounds);
        let mib = |rate: f64| rate * self.workload.payload_size as f64 / (1024.0 * 1024.0);
        println!("\n== summary: median over {rounds} rounds [min .. max], spread = (max - min) / median");
        println!("{:<26} {:>12} {:>24} {:>7} {:>10}", "variant", "events/s", "[min .. max]", "spread", "MiB/s val");
        let groups: [&[&str]; 2] = [
            &[HERALD_ALL, HERALD_LOOP, RAW_ENCODE, RAW_ENCODE_VALUE, RAW_PRODUCER, PERF_TEST],
            &[HERALD_CONSUMER, RAW_DECODE, RAW_DECODE_VALUE, RAW_NO_DECODE],
        ];
        for group in groups {
            for variant in group {
                let Some(s) = rates.get(variant).and_then(|r| Summary::of(r)) else { continue };
                let failed = rates[variant].iter().filter(|r| r.is_nan()).count();
                println!(
                    "{variant:<26} {:>12.0} {:>24} {:>6.0}% {:>10.1}{}",
                    s.median,
                    format!("[{:.0} .. {:.0}]", s.min, s.max),
                    s.spread() * 100.0,
                    mib(s.median),
                    if failed > 0 { format!("  ({failed} runs failed)") } else { String::new() }
                );
            }
        }
        for (variant, join) in joins {
            if let Some(s) = Summary::of(join) {
                println!("  join time {variant:<26} median {:.2} s [{:.2} .. {:.2}]", s.median, s.min, s.max);
            }
        }
        println!("\n== ratios (median of per-round ratios [min .. max]; goal >= {GOAL})");
        // The goal: raw does the same Avro work as part of its timed loop, with the fastest
        // Rust Avro (serde_avro_fast), the strongest baseline a user could write. Ceiling:
        // raw does no Avro work at all (records encoded before the timer; records not
        // decoded). Scale: raw with apache-avro's slower `Value` path; the Java client.
        let pairs = [
            (HERALD_ALL, RAW_ENCODE, Role::Goal),
            (HERALD_LOOP, RAW_ENCODE, Role::Goal),
            (HERALD_CONSUMER, RAW_DECODE, Role::Goal),
            (HERALD_ALL, RAW_PRODUCER, Role::Ceiling),
            (HERALD_LOOP, RAW_PRODUCER, Role::Ceiling),
            (HERALD_CONSUMER, RAW_NO_DECODE, Role::Ceiling),
            (HERALD_ALL, RAW_ENCODE_VALUE, Role::Scale),
            (HERALD_CONSUMER, RAW_DECODE_VALUE, Role::Scale),
            (RAW_PRODUCER, PERF_TEST, Role::Scale),
        ];
        for (a, b, role) in pairs {
            let (Some(ra), Some(rb)) = (rates.get(a), rates.get(b)) else { continue };
            let ratios = paired_ratios(ra, rb);
            let line = format!("{a} / {b}");
            let Some(s) = Summary::of(&ratios) else {
                println!("{line:<52}   n/a (no round where both ran)");
                continue;
            };
            let verdict = match role {
                Role::Goal if s.median >= GOAL => "meets goal",
                Role::Goal => "BELOW GOAL",
                Role::Ceiling => "(against the transport ceiling)",
                Role::Scale => "(scale only)",
            };
            println!("{line:<52} {:>5.2} [{:.2} .. {:.2}]  {verdict}", s.median, s.min, s.max);
        }
    }
}

/// What a ratio in the report means.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Herald against raw rdkafka doing the same Avro work: the 0.9 goal.
    Goal,
    /// Herald against raw rdkafka doing no Avro work: for insight.
    Ceiling,
    /// For scale only.
    Scale,
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
