//! The event-store reads: a counter aggregate on Kafka, its event topic indexed by the
//! `StreamIndex` projection into SQLite, and `EventStore` reading it back.
//!
//! ```text
//! bash scripts/kafka start
//! cargo run -p herald-aggregate --example event_store
//! ```
//!
//! Shows: one counter's stream read from a version by the index (the records fetched are
//! its own, however many other counters' events lie between them), its state as of a
//! version and as of a time (time travel), and "read all" in pages from a position. Its
//! topics have a fresh prefix, so it can run any number of times on the same broker.
//!
//! In production the index runs as its own projector program (herald-projector's `App`,
//! or `herald aggregate index` for the aggregates `herald` knows), with `/health`,
//! `/metrics`, rebuild and time travel of its own.

use std::time::Duration;

use herald_aggregate::{Aggregate, At, CommandClient, Decider, EventStore, LogPosition, Rejection, StreamIndex};
use herald_bus::admin::{self, TopicSpec};
use herald_bus::{KafkaConfig, Topic};
use herald_choreography::engine::{Engine, EngineSettings};
use herald_projector::Projector;
use tokio_util::sync::CancellationToken;

/// `example.tally.Add`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Add {
    counter: String,
    n: i64,
}

/// `example.tally.Added`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Added {
    counter: String,
    n: i64,
}

impl herald_bus::Event for Add {
    const TYPE: &'static str = "example.tally.Add";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Add","namespace":"example.tally","fields":[{"name":"counter","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.counter
    }
}

impl herald_bus::Event for Added {
    const TYPE: &'static str = "example.tally.Added";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Added","namespace":"example.tally","fields":[{"name":"counter","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.counter
    }
}

herald_bus::family! {
    /// The commands.
    #[derive(Debug)]
    enum TallyCommand { Add(Add) }
}

herald_bus::family! {
    /// The events (untagged: each serializes as itself).
    #[derive(Debug, Clone, serde::Serialize)]
    #[serde(untagged)]
    enum TallyEvent { Added(Added) }
}

/// A running total.
struct Tally;

impl Aggregate for Tally {
    const NAME: &'static str = "example-tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type State = i64;
    const COMMANDS: Topic<TallyCommand> = Topic::new("example.tally.commands");
    const EVENTS: Topic<TallyEvent> = Topic::new("example.tally");

    fn decide(&self, _: &i64, command: TallyCommand) -> Result<Vec<TallyEvent>, Rejection> {
        let TallyCommand::Add(add) = command;
        Ok(vec![TallyEvent::Added(Added { counter: add.counter, n: add.n })])
    }

    fn evolve(&self, total: i64, event: &TallyEvent) -> i64 {
        let TallyEvent::Added(added) = event;
        total + added.n
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = KafkaConfig::new(std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()));
    let prefix = format!("example.{}.", uuid::Uuid::now_v7().simple());
    let (commands, events, replies) = (format!("{prefix}{}", Tally::COMMANDS.name()), format!("{prefix}{}", Tally::EVENTS.name()), format!("{prefix}replies"));
    let specs: Vec<TopicSpec> = [&commands, &events, &replies].iter().map(|t| TopicSpec::new(t.as_str()).partitions(3)).collect();
    admin::create_topics(&config, &specs).await?;
    for spec in &specs {
        while admin::partition_count(&config, &spec.name).await?.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stop = CancellationToken::new();

    // The aggregate, and the index of its events (SQLite in a temporary folder).
    let mut settings = EngineSettings::new("example");
    settings.topic_prefix = prefix.clone();
    let engine = tokio::spawn(Engine::new(&config, Decider(Tally), settings)?.run(stop.clone().cancelled_owned()));
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir)?;
    let index = herald_projector::store::open(&format!("sqlite:{}", dir.join("index.db").display()))?;
    let projector = Projector::builder(config.clone(), format!("{prefix}index"), &Topic::<TallyEvent>::named(&events), StreamIndex::<Tally>::new(), index.clone()).build().await?;
    let indexing = tokio::spawn(projector.run(stop.clone().cancelled_owned()));

    // t-1 gets 1, 2, 3, 4; 50 other counters write between each of its events.
    let client = CommandClient::new(&config, Topic::<TallyCommand>::named(&commands), replies).await?.with_timeout(Duration::from_secs(30));
    for n in 1..=4 {
        client.send(Add { counter: "t-1".into(), n }).await?;
        let mut others = tokio::task::JoinSet::new();
        for i in 0..50 {
            let client = client.clone();
            others.spawn(async move { client.send(Add { counter: format!("other-{n}-{i}"), n: 1 }).await });
        }
        while let Some(reply) = others.join_next().await {
            reply??;
        }
    }

    // Reads see every committed event whether or not the index has caught up (what it has
    // not reached is read from the partition after its position); wait for it here so the
    // reads below go by index alone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while indexed(&*index)? < 4 * 51 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the index did not catch up in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reads = EventStore::new(&config, &events, index)?;
    let stream = reads.read_stream::<Tally>("t-1", 2).await?;
    for e in &stream {
        println!("t-1 version {} at {} ({}/{}): {:?}", e.version, e.time, e.partition, e.offset, e.event);
    }
    // Offsets at most 32 apart are read through in one fetch, so this counts the records
    // between them too; never the whole topic.
    println!("records fetched from Kafka for that: {}", reads.records_read().await);
    let at2 = reads.state_at(&Tally, "t-1", At::Version(2)).await?;
    let latest = reads.state_at(&Tally, "t-1", At::Latest).await?;
    let at_time = reads.state_at(&Tally, "t-1", At::Time(stream[1].time)).await?;
    println!("t-1 at version 2: {}; at {}: {} (version {}); now: {} (version {})", at2.state, stream[1].time, at_time.state, at_time.version, latest.state, latest.version);

    let (mut position, mut total) = (LogPosition::default(), 0);
    loop {
        let page = reads.read_all::<Tally>(&position, 64).await?;
        if page.events.is_empty() {
            break;
        }
        total += page.events.len();
        position = page.next;
    }
    println!("read all: {total} events, ending at {:?}", position.0);

    stop.cancel();
    engine.await??;
    indexing.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// How many events the index has.
fn indexed(store: &dyn herald_projector::Store) -> anyhow::Result<i64> {
    let mut conn = store.connect()?;
    let mut tx = conn.read()?;
    let count = tx.as_tx().query_opt("SELECT COUNT(*) FROM aggregate_stream", &[]).ok().flatten().map_or(Ok(0), |row| row.int(0))?;
    Ok(count)
}
