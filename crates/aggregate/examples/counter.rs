//! A counter aggregate on Kafka: commands sent with `CommandClient`, decided one at a time
//! per counter by the choreography engine, each reply awaited.
//!
//! ```text
//! bash scripts/kafka start
//! cargo run -p herald-aggregate --example counter
//! ```
//!
//! Shows: accepted commands with contiguous versions, a domain rejection (`too-much`), an
//! optimistic-concurrency `conflict`, and a command sent twice with the same id getting the
//! same reply (decided once). Its topics have a fresh prefix, so it can run any number of
//! times on the same broker.

use std::time::Duration;

use herald_aggregate::{Aggregate, CommandClient, Decider, Rejection, SendOptions};
use herald_bus::admin::{self, TopicSpec};
use herald_bus::{KafkaConfig, Topic};
use herald_choreography::engine::{Engine, EngineSettings};
use tokio_util::sync::CancellationToken;

/// `example.counter.Add`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Add {
    counter: String,
    n: i64,
}

/// `example.counter.Added`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Added {
    counter: String,
    n: i64,
}

impl herald_bus::Event for Add {
    const TYPE: &'static str = "example.counter.Add";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Add","namespace":"example.counter","fields":[{"name":"counter","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.counter
    }
}

impl herald_bus::Event for Added {
    const TYPE: &'static str = "example.counter.Added";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Added","namespace":"example.counter","fields":[{"name":"counter","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.counter
    }
}

herald_bus::family! {
    /// The counter's commands.
    #[derive(Debug)]
    enum CounterCommand { Add(Add) }
}

herald_bus::family! {
    /// The counter's events (untagged: each serializes as itself).
    #[derive(Debug, Clone, serde::Serialize)]
    #[serde(untagged)]
    enum CounterEvent { Added(Added) }
}

/// A counter that never goes above 10.
struct Counter;

impl Aggregate for Counter {
    const NAME: &'static str = "example-counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type State = i64;
    const COMMANDS: Topic<CounterCommand> = Topic::new("example.counter.commands");
    const EVENTS: Topic<CounterEvent> = Topic::new("example.counter");

    fn decide(&self, total: &i64, command: CounterCommand) -> Result<Vec<CounterEvent>, Rejection> {
        let CounterCommand::Add(add) = command;
        if total + add.n > 10 {
            return Err(Rejection::new("too-much", format!("{total} + {} > 10", add.n)));
        }
        Ok(vec![CounterEvent::Added(Added { counter: add.counter, n: add.n })])
    }

    fn evolve(&self, total: i64, event: &CounterEvent) -> i64 {
        let CounterEvent::Added(added) = event;
        total + added.n
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = KafkaConfig::new(std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()));
    let prefix = format!("example.{}.", uuid::Uuid::now_v7().simple());
    let (commands, events, replies) = (format!("{prefix}{}", Counter::COMMANDS.name()), format!("{prefix}{}", Counter::EVENTS.name()), format!("{prefix}replies"));
    let specs: Vec<TopicSpec> = [&commands, &events, &replies].iter().map(|t| TopicSpec::new(t.as_str()).partitions(3)).collect();
    admin::create_topics(&config, &specs).await?;
    for spec in &specs {
        while admin::partition_count(&config, &spec.name).await?.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The aggregate's one writer per counter: the engine, with every topic prefixed.
    let mut settings = EngineSettings::new("example");
    settings.topic_prefix = prefix.clone();
    let engine = Engine::new(&config, Decider(Counter), settings)?;
    let stop = CancellationToken::new();
    let until = stop.clone();
    let running = tokio::spawn(engine.run(async move { until.cancelled().await }));

    let client = CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies.clone()).await?.with_timeout(Duration::from_secs(30));
    let show = |what: &str, reply: &herald_aggregate::CommandReply| println!("{what:<28} {:?} version {:?} reason {:?}", reply.outcome, reply.version, reply.reason);
    show("add 4", &client.send(Add { counter: "c-1".into(), n: 4 }).await?);
    show("add 5", &client.send(Add { counter: "c-1".into(), n: 5 }).await?);
    show("add 5 (would be 14)", &client.send(Add { counter: "c-1".into(), n: 5 }).await?);
    show("add 1 expecting version 1", &client.send_with(Add { counter: "c-1".into(), n: 1 }, SendOptions::default().expect_version(1)).await?);
    let id = uuid::Uuid::now_v7();
    let first = client.send_with(Add { counter: "c-1".into(), n: 1 }, SendOptions::default().expect_version(2).command_id(id)).await?;
    show("add 1 expecting version 2", &first);
    let again = client.send_with(Add { counter: "c-1".into(), n: 1 }, SendOptions::default().expect_version(2).command_id(id)).await?;
    show("the same command again", &again);
    assert_eq!(first, again, "sent twice, decided once: the same reply");
    show("another counter", &client.send(Add { counter: "c-2".into(), n: 10 }).await?);

    stop.cancel();
    running.await??;
    println!("events on {events}; replies on {replies}");
    Ok(())
}
