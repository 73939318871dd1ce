//! The reaction step: consume a `Ping`, count it in the key's state, emit a `Pong`. The
//! same step as `crates/bench/kstreams/ReactStep.java` (same schemas, same encoding).

use chrono::{DateTime, Utc};
use herald_bus::Topic;
use herald_choreography::declaration::Output;
use herald_choreography::engine::{Engine, EngineSettings};
use herald_choreography::{Inputs, Participant, Reaction};

herald_bus::family! {
    /// The benchmark's events.
    #[derive(Debug)]
    pub enum Step {
        /// An input.
        Ping(Ping),
        /// The answer.
        Pong(Pong),
    }
}

/// An input: `id` is the key, `n` its index in the pre-loaded topic.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ping {
    /// Key.
    pub id: String,
    /// Index of the event.
    pub n: i64,
}

/// The answer: `n` = pings seen for the key so far.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pong {
    /// Key.
    pub id: String,
    /// Pings of the key so far (the state).
    pub n: i32,
}

impl herald_bus::Event for Ping {
    const TYPE: &'static str = "bench.react.Ping";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Ping","namespace":"bench.react","fields":[{"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

impl herald_bus::Event for Pong {
    const TYPE: &'static str = "bench.react.Pong";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Pong","namespace":"bench.react","fields":[{"name":"id","type":"string"},{"name":"n","type":"int"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

/// The state of a key.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
pub struct Seen {
    /// Pings seen.
    pub n: i32,
}

/// The participant.
pub struct Counter {
    input: Topic<Step>,
    output: Topic<Step>,
}

impl Counter {
    /// The step from `input` to `output`.
    pub fn new(input: &str, output: &str) -> Self {
        Counter { input: Topic::named(input), output: Topic::named(output) }
    }
}

impl Participant for Counter {
    const NAME: &'static str = "bench-react";
    type Input = Step;
    type State = Seen;

    fn inputs(&self) -> Inputs<Step> {
        Inputs::by_subject().on(&self.input, |e| e)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<Pong, _>(&self.output).after(&["bench.react.Ping"]).terminal()]
    }

    fn decide(&self, seen: &Seen, input: Step, _now: DateTime<Utc>) -> Reaction<Seen> {
        match input {
            Step::Ping(p) => {
                let n = seen.n + 1;
                Reaction::with_state(Seen { n }).emit(&self.output, Pong { id: p.id, n })
            }
            Step::Pong(_) => Reaction::keep(),
        }
    }
}

/// How `serve` runs the step.
#[derive(Debug, Clone, clap::Args)]
pub struct Serve {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Input topic.
    #[arg(long)]
    pub input: String,
    /// Output topic.
    #[arg(long)]
    pub output: String,
    /// Consumer group; the changelog is `<group>.changelog`.
    #[arg(long)]
    pub group: String,
    /// Commit interval in milliseconds.
    #[arg(long)]
    pub commit_ms: u64,
    /// Largest transaction, in reactions.
    #[arg(long, default_value_t = 1000)]
    pub max_batch: usize,
    /// At least once instead of exactly once.
    #[arg(long)]
    pub at_least_once: bool,
    /// Pipelined (`EngineSettings::pipeline`).
    #[arg(long)]
    pub pipeline: bool,
}

/// Runs the step until SIGTERM or Ctrl-C, then stops in order.
pub async fn serve(args: Serve) -> anyhow::Result<()> {
    let config = herald_bus::KafkaConfig::new(&args.bootstrap);
    let mut settings = EngineSettings::new("bench");
    settings.group = Some(args.group.clone());
    settings.changelog = Some(format!("{}.changelog", args.group));
    settings.commit_interval = std::time::Duration::from_millis(args.commit_ms);
    settings.max_batch = args.max_batch;
    settings.exactly_once = !args.at_least_once;
    settings.pipeline = args.pipeline;
    settings.static_membership = false;
    settings.consumer_properties.push(("auto.offset.reset".into(), "earliest".into()));
    let counter = Counter { input: Topic::named(&args.input), output: Topic::named(&args.output) };
    let engine = Engine::new(&config, counter, settings)?;
    engine
        .run(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    Ok(())
}
