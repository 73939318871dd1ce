//! Choreography benchmark: Herald's exactly-once reaction step against the same step at
//! least once and against Kafka Streams (`exactly_once_v2`) on the same broker; and the
//! reference saga's end-to-end latency.
//!
//! ```text
//! cargo build --release -p herald-bench --bin react
//! crates/bench/kstreams/run build          # Kafka Streams from Maven Central (once)
//! target/release/react run --events 200000 --rounds 3
//! target/release/react saga --bootstrap 127.0.0.1:19092 --rate 200 --seconds 60
//! ```
//!
//! `run`: the input topic (6 partitions, `--keys` keys) is pre-loaded once with Herald's
//! publisher; every run then starts one system as its own process (`react serve` for
//! Herald, `crates/bench/kstreams/run exec` for Kafka Streams) in a fresh group with a
//! fresh output topic, and a read_committed reader counts its outputs. The rate is taken
//! from the moment 10 % of the outputs are visible to the last one (so start-up, group
//! join and JIT warm-up do not count), CPU per event from `/proc/<pid>/stat` of the
//! system's process over the same span. Systems rotate within each interval and round.
//!
//! `serve`: Herald's side of one run (the engine in this process).
//! `saga`: see [`saga`].
//! `aggregate`: see [`aggregate`] (`target/release/react aggregate --events 100000 --rounds 3`).
//! `recovery`: see [`recovery`] (`target/release/react recovery --events 1000000 --keys 1000,100000`).
//! `reads`: see [`reads`] (`target/release/react reads --events 200000 --keys 1000`).

mod aggregate;
mod partition;
mod proc;
mod reads;
mod recovery;
mod saga;
mod shop_role;
mod step;
mod throughput;

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_bench::broker::{self, Names};
use herald_bench::machine::Machine;
use herald_bench::stats::{paired_ratios, Summary};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions, Topic};
use throughput::{Plan, System};

#[derive(Debug, Parser)]
#[command(about = "Herald's exactly-once reaction step against at least once and Kafka Streams; the saga's latency")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The throughput runs.
    Run(RunArgs),
    /// Herald's side of one run (started by `run`).
    Serve(step::Serve),
    /// The reference saga's latency.
    Saga(saga::SagaArgs),
    /// One role of the reference saga with the benchmark's engine settings (started by `saga --pipeline`).
    ShopRole(shop_role::RoleArgs),
    /// An aggregate (herald-aggregate) against the reaction step, and commands with replies.
    Aggregate(aggregate::AggregateArgs),
    /// An aggregate partition's recovery: from a new owner's start to its first decided command.
    Recovery(recovery::RecoveryArgs),
    /// One aggregate's stream read back by the event store's index against a scan.
    Reads(reads::ReadsArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Input events.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Distinct keys (each a state).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Commit intervals in ms.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    intervals: Vec<u64>,
    /// Systems: herald-eos, herald-alo, herald-pipelined, streams-eos, streams-alo.
    #[arg(long, value_delimiter = ',', default_value = "herald-eos,herald-pipelined,herald-alo,streams-eos", value_parser = System::parse)]
    systems: Vec<System>,
    /// Herald's largest transaction, in reactions.
    #[arg(long, default_value_t = 1000)]
    max_batch: usize,
    /// Herald's largest transaction when pipelined (large: the interval decides, as in
    /// Kafka Streams).
    #[arg(long, default_value_t = 100_000)]
    pipelined_max_batch: usize,
    /// Kafka Streams' num.stream.threads (default: the CPUs, as Herald's tokio workers).
    #[arg(long)]
    threads: Option<usize>,
    /// Keep the pre-loaded input topic (for `serve` runs by hand; `--rounds 0` only loads it).
    #[arg(long)]
    keep_input: bool,
}

/// jemalloc, not glibc's malloc: measured in BENCHMARKS.md ("Aggregates: the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).with_writer(std::io::stderr).init();
    match Cli::parse().command {
        Cmd::Serve(args) => step::serve(args).await,
        Cmd::Run(args) => run(args).await,
        Cmd::Saga(args) => saga::run(args).await,
        Cmd::ShopRole(args) => shop_role::run(args).await,
        Cmd::Aggregate(args) => aggregate::run(args).await,
        Cmd::Recovery(args) => recovery::run(args).await,
        Cmd::Reads(args) => reads::run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(usize::from).unwrap_or(1));
    let config = KafkaConfig::new(&args.bootstrap);
    let mut names = Names::new();
    let input = names.next("react.in");
    broker::create_topic(&config, &input).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let publisher = Publisher::new(&config, PublisherOptions::new("/herald/bench"))?;
    let topic: Topic<step::Step> = Topic::named(&input);
    let pings: Vec<step::Ping> = (0..args.events).map(|i| step::Ping { id: format!("k{}", i % args.keys), n: i as i64 }).collect();
    for chunk in pings.chunks(50_000) {
        for result in publisher.publish_all(&topic, chunk).await {
            result?;
        }
    }
    eprintln!("pre-loaded {} events into {input}", args.events);
    let mut created = vec![input.clone()];
    // (interval, system) -> runs
    let mut results: BTreeMap<(u64, System), Vec<throughput::Run>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &interval in &args.intervals {
            let n = args.systems.len();
            for i in 0..n {
                let system = args.systems[(i + round) % n];
                let output = names.next("react.out");
                broker::create_topic(&config, &output).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                let group = names.next("react.group");
                created.push(output.clone());
                created.push(match system {
                    System::HeraldEos | System::HeraldAlo | System::HeraldPipelined => format!("{group}.changelog"),
                    _ => format!("{group}-seen-changelog"),
                });
                let plan = Plan { bootstrap: &args.bootstrap, input: &input, events: args.events, partitions: broker::PARTITIONS, commit_ms: interval, max_batch: args.max_batch, pipelined_max_batch: args.pipelined_max_batch, threads, deadline: Duration::from_secs(600) };
                let r = throughput::run(system, &plan, &group, &output).await.map_err(|e| anyhow::anyhow!("{}: {e}", system.label()))?;
                eprintln!(
                    "round {} interval {interval} ms {:<30} {:>9.0} ev/s  {:>6.1} ms CPU/1000 ev (machine {:>6.1})  outputs {}",
                    round + 1,
                    system.label(),
                    r.rate,
                    r.cpu_ms_per_k,
                    r.machine_ms_per_k,
                    r.outputs
                );
                results.entry((interval, system)).or_default().push(r);
                let _ = broker::delete_topics(&args.bootstrap, &created[1..]).await;
                created.truncate(1);
            }
        }
    }
    let _ = broker::delete_topics(&args.bootstrap, &created[usize::from(args.keep_input)..]).await;
    println!("\n{} events over {} partitions, {} keys, {} rounds; Kafka Streams num.stream.threads={threads}; Herald max batch {} ({} pipelined)", args.events, broker::PARTITIONS, args.keys, args.rounds, args.max_batch, args.pipelined_max_batch);
    println!("{}\n", Machine::current());
    println!("| commit interval | system | events/s median (min–max) | CPU ms / 1000 events (process) | machine CPU ms / 1000 events | outputs |");
    println!("|---|---|---|---|---|---|");
    for ((interval, system), runs) in &results {
        let rate = Summary::of(&runs.iter().map(|r| r.rate).collect::<Vec<_>>()).ok_or_else(|| anyhow::anyhow!("no runs"))?;
        let cpu = Summary::of(&runs.iter().map(|r| r.cpu_ms_per_k).collect::<Vec<_>>()).ok_or_else(|| anyhow::anyhow!("no runs"))?;
        let machine = Summary::of(&runs.iter().map(|r| r.machine_ms_per_k).collect::<Vec<_>>()).ok_or_else(|| anyhow::anyhow!("no runs"))?;
        let outputs: Vec<String> = runs.iter().map(|r| r.outputs.to_string()).collect();
        println!("| {interval} ms | {} | {:.0} ({:.0}–{:.0}) | {:.1} | {:.1} | {} |", system.label(), rate.median, rate.min, rate.max, cpu.median, machine.median, outputs.join(", "));
    }
    println!("\n| commit interval | Herald EOS / Kafka Streams EOS (paired by round: median, min–max) | Herald EOS pipelined / Kafka Streams EOS | Herald EOS / Herald ALO |");
    println!("|---|---|---|---|");
    for &interval in &args.intervals {
        let rates = |s: System| results.get(&(interval, s)).map(|r| r.iter().map(|r| r.rate).collect::<Vec<_>>()).unwrap_or_default();
        let show = |a: &[f64], b: &[f64]| Summary::of(&paired_ratios(a, b)).map_or("–".to_owned(), |s| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max));
        println!(
            "| {interval} ms | {} | {} | {} |",
            show(&rates(System::HeraldEos), &rates(System::StreamsEos)),
            show(&rates(System::HeraldPipelined), &rates(System::StreamsEos)),
            show(&rates(System::HeraldEos), &rates(System::HeraldAlo))
        );
    }
    Ok(())
}
