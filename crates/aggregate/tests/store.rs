//! The event-store reads against the real broker: a counter aggregate on the engine, its
//! event topic indexed by the `StreamIndex` projection into SQLite, and `EventStore`
//! reading streams back by that index; and a command naming a reply topic that does not
//! exist, which must stall nothing.
//!
//! `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo test -p herald-aggregate --test store`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald_aggregate::{Aggregate, At, CommandClient, Decider, EventStore, LogPosition, ReadError, Rejection, StreamIndex};
use herald_bus::admin::{self, TopicSpec};
use herald_bus::{KafkaConfig, Topic};
use herald_choreography::engine::{Engine, EngineSettings};
use herald_projector::{Projector, Store};
use tokio_util::sync::CancellationToken;

/// `test.counter.Add`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Add {
    counter: String,
    n: i64,
}

/// `test.counter.Added`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Added {
    counter: String,
    n: i64,
}

impl herald_bus::Event for Add {
    const TYPE: &'static str = "test.counter.Add";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Add","namespace":"test.counter","fields":[{"name":"counter","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.counter
    }
}

impl herald_bus::Event for Added {
    const TYPE: &'static str = "test.counter.Added";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Added","namespace":"test.counter","fields":[{"name":"counter","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.counter
    }
}

herald_bus::family! {
    #[derive(Debug)]
    enum CounterCommand { Add(Add) }
}

herald_bus::family! {
    #[derive(Debug, Clone, PartialEq, serde::Serialize)]
    #[serde(untagged)]
    enum CounterEvent { Added(Added) }
}

/// A counter; its state lists the amounts added, so a fold shows order as well as sum.
#[derive(Debug, Clone, Copy, Default)]
struct Counter;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
struct Tally {
    added: Vec<i64>,
}

impl Aggregate for Counter {
    const NAME: &'static str = "store-test-counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type State = Tally;
    const COMMANDS: Topic<CounterCommand> = Topic::new("counter.commands");
    const EVENTS: Topic<CounterEvent> = Topic::new("counter");

    fn decide(&self, _: &Tally, command: CounterCommand) -> Result<Vec<CounterEvent>, Rejection> {
        let CounterCommand::Add(add) = command;
        Ok(vec![CounterEvent::Added(Added { counter: add.counter, n: add.n })])
    }

    fn evolve(&self, mut tally: Tally, event: &CounterEvent) -> Tally {
        let CounterEvent::Added(added) = event;
        tally.added.push(added.n);
        tally
    }
}

/// How many rows the index has.
async fn indexed(store: &Arc<dyn Store>) -> i64 {
    count(store, "SELECT COUNT(*) FROM aggregate_stream").await
}

/// The count `sql` reads from `store` (0 when it fails: a table not made yet), on a
/// blocking thread: the stores' clients are blocking, and PostgreSQL's refuses to run
/// inside the async runtime.
async fn count(store: &Arc<dyn Store>, sql: &'static str) -> i64 {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.read().expect("read");
        match tx.as_tx().query_opt(sql, &[]) {
            Ok(Some(row)) => row.int(0).unwrap_or(0),
            _ => 0,
        }
    })
    .await
    .expect("count thread")
}

/// The counter's topics (prefixed, `partitions` each) and its engine, running.
struct Counted {
    prefix: String,
    commands: String,
    events: String,
    replies: String,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), herald_choreography::engine::EngineError>>,
}

/// Creates the counter's topics under a fresh prefix and starts its engine.
async fn start_counter(config: &KafkaConfig, name: &str, partitions: i32) -> Counted {
    let prefix = format!("{}.", herald_testkit::unique(name));
    let (commands, events, replies) = (format!("{prefix}counter.commands"), format!("{prefix}counter"), format!("{prefix}replies"));
    let specs: Vec<TopicSpec> = [&commands, &events, &replies].iter().map(|t| TopicSpec::new(t.as_str()).partitions(partitions)).collect();
    admin::create_topics(config, &specs).await.expect("topics");
    for spec in &specs {
        herald_testkit::wait_until(Duration::from_secs(30), "topic metadata", || async { admin::partition_count(config, &spec.name).await.ok().flatten().is_some() }).await;
    }
    let mut settings = EngineSettings::new(format!("{name}-test"));
    settings.topic_prefix = prefix.clone();
    let engine = Engine::new(config, Decider(Counter), settings).expect("engine");
    let stop = CancellationToken::new();
    let running = tokio::spawn(engine.run(stop.clone().cancelled_owned()));
    Counted { prefix, commands, events, replies, stop, running }
}

/// Sends `Add { counter, n }` and expects it accepted.
async fn add(client: &CommandClient<CounterCommand>, counter: &str, n: i64) {
    let reply = client.send(Add { counter: counter.to_owned(), n }).await.expect("reply");
    assert!(reply.is_accepted(), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_are_read_back_by_index_and_states_as_of_versions_and_times() {
    streams_read_back(None).await;
}

/// The same with the index in PostgreSQL (a fresh database on `HERALD_TEST_POSTGRES_URL`;
/// skipped with a message outside CI when it is not set, a failure in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_are_read_back_by_an_index_kept_in_postgresql() {
    let Some(url) = herald_testkit::fresh_postgres("herald_index").await else { return };
    streams_read_back(Some(url)).await;
}

/// The reads against an index in `store_url` (`None`: a fresh SQLite file).
async fn streams_read_back(store_url: Option<String>) {
    let config: KafkaConfig = herald_testkit::kafka().await;
    let Counted { prefix, commands, events, replies, stop, running } = start_counter(&config, "store", 3).await;

    // The index: the StreamIndex projection into SQLite, in this process.
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).expect("folder");
    let store_url = store_url.unwrap_or_else(|| format!("sqlite:{}", dir.join("index.db").display()));
    let store = herald_projector::store::open(&store_url).expect("store");
    let events_topic: Topic<CounterEvent> = Topic::named(&events);
    let projector = Projector::builder(config.clone(), herald_testkit::unique("index"), &events_topic, StreamIndex::<Counter>::new(), store.clone()).build().await.expect("projector");
    let stop_index = CancellationToken::new();
    let indexing = tokio::spawn(projector.run(stop_index.clone().cancelled_owned()));

    let client = CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies.clone()).await.expect("client").with_timeout(Duration::from_secs(60));
    // c-1 gets 1..=5, each after 150 other counters' events (about 50 in its partition),
    // so its events lie far apart in the topic.
    let mut total = 0;
    for n in 1..=5 {
        add(&client, "c-1", n).await;
        let mut others = tokio::task::JoinSet::new();
        for i in 0..150 {
            let client = client.clone();
            others.spawn(async move { add(&client, &format!("other-{n}-{i}"), 1).await });
        }
        while let Some(done) = others.join_next().await {
            done.expect("sender");
        }
        total += 151;
    }
    herald_testkit::wait_until(Duration::from_secs(60), "the index has every event", || {
        let store = store.clone();
        async move { indexed(&store).await == total }
    })
    .await;

    let reads = EventStore::new(&config, &events, store.clone()).expect("event store");
    // The whole stream: versions 1..=5 with the amounts in order, 5 records fetched.
    let before = reads.records_read().await;
    let stream = reads.read_stream::<Counter>("c-1", 1).await.expect("stream");
    let fetched = reads.records_read().await - before;
    assert_eq!(stream.iter().map(|r| r.version).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(stream.iter().map(|r| { let CounterEvent::Added(a) = &r.event; a.n }).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(stream.iter().all(|r| r.aggregate_id == "c-1" && r.event_type == "test.counter.Added"));
    let partition = stream[0].partition;
    let in_partition = herald_testkit::read_all(&config, &events, total as usize, Duration::from_secs(60)).await.iter().filter(|m| rdkafka::Message::partition(*m) == partition).count();
    assert!(in_partition > 200, "c-1's partition holds {in_partition} events");
    assert_eq!(fetched, 5, "by index: 5 records fetched, not the partition's {in_partition}");

    // From a version.
    let from3 = reads.read_stream_raw("c-1", 3).await.expect("stream");
    assert_eq!(from3.iter().map(|r| r.version).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(from3[0].event_id, stream[2].event_id);

    // Time travel by version and by time.
    let at2 = reads.state_at(&Counter, "c-1", At::Version(2)).await.expect("state");
    assert_eq!((at2.state.added.clone(), at2.version), (vec![1, 2], 2));
    let latest = reads.state_at(&Counter, "c-1", At::Latest).await.expect("state");
    assert_eq!((latest.state.added.clone(), latest.version, latest.time), (vec![1, 2, 3, 4, 5], 5, Some(stream[4].time)));
    let at_time = reads.state_at(&Counter, "c-1", At::Time(stream[2].time)).await.expect("state");
    assert_eq!((at_time.state.added.clone(), at_time.version), (vec![1, 2, 3], 3));
    let just_before = reads.state_at(&Counter, "c-1", At::Time(stream[3].time - chrono::Duration::microseconds(1))).await.expect("state");
    assert_eq!(just_before.version, 3);
    let before_all = reads.state_at(&Counter, "c-1", At::Time(stream[0].time - chrono::Duration::seconds(1))).await.expect("state");
    assert_eq!((before_all.version, before_all.exists()), (0, false));

    // An aggregate that does not exist: no events, the default state.
    assert!(reads.read_stream_raw("nope", 1).await.expect("stream").is_empty());
    let nope = reads.state_at(&Counter, "nope", At::Latest).await.expect("state");
    assert_eq!((nope.version, nope.exists(), nope.state), (0, false, Tally::default()));

    // Events the index has not reached are read after its position: stop the index,
    // add two, and the stream has them.
    stop_index.cancel();
    indexing.await.expect("index task").expect("index stopped in order");
    add(&client, "c-1", 6).await;
    add(&client, "c-1", 7).await;
    let all = reads.state_at(&Counter, "c-1", At::Latest).await.expect("state");
    assert_eq!((all.state.added.clone(), all.version), ((1..=7).collect::<Vec<_>>(), 7));
    let at6 = reads.state_at(&Counter, "c-1", At::Version(6)).await.expect("state");
    assert_eq!(at6.version, 6);
    total += 2;

    // Read all: every event once, pages continuing from their position, versions
    // contiguous per aggregate in the order read.
    let mut position = LogPosition::default();
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    let mut read = 0;
    loop {
        let page = reads.read_all::<Counter>(&position, 100).await.expect("page");
        if page.events.is_empty() {
            assert_eq!(page.next, position, "an empty page stays where it was");
            break;
        }
        for e in &page.events {
            let last = versions.entry(e.aggregate_id.clone()).or_insert(0);
            assert_eq!(e.version, *last + 1, "{} after {last}", e.aggregate_id);
            *last = e.version;
        }
        read += page.events.len() as i64;
        position = page.next;
    }
    assert_eq!(read, total);
    assert_eq!(versions["c-1"], 7);
    assert!(position.0.values().sum::<i64>() >= total);

    // An index of another topic is refused.
    let other = EventStore::new(&config, format!("{prefix}elsewhere"), store.clone()).expect("event store");
    assert!(matches!(other.read_stream_raw("c-1", 1).await, Err(ReadError::NotIndexed { .. })));

    stop.cancel();
    running.await.expect("engine task").expect("engine stopped in order");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record published by hand on the event topic, under an aggregate's key, takes no
/// version: the index dead-letters it (the versions after it stay the engine's), and the
/// stream read by index, after the index and by read-all leaves it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_the_engine_did_not_write_takes_no_version() {
    let config: KafkaConfig = herald_testkit::kafka().await;
    let Counted { prefix, commands, events, replies, stop, running } = start_counter(&config, "stray", 1).await;
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).expect("folder");
    let store = herald_projector::store::open(&format!("sqlite:{}", dir.join("index.db").display())).expect("store");
    let events_topic: Topic<CounterEvent> = Topic::named(&events);
    let projector = Projector::builder(config.clone(), herald_testkit::unique("index"), &events_topic, StreamIndex::<Counter>::new(), store.clone()).build().await.expect("projector");
    let stop_index = CancellationToken::new();
    let indexing = tokio::spawn(projector.run(stop_index.clone().cancelled_owned()));
    let client = CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies.clone()).await.expect("client").with_timeout(Duration::from_secs(60));
    let publisher = herald_bus::Publisher::new(&config, herald_bus::PublisherOptions::new("/test/by-hand")).expect("publisher");
    let stray = |n| Added { counter: "c-1".to_owned(), n };

    add(&client, "c-1", 1).await;
    publisher.publish(&events_topic, &stray(100)).await.expect("stray published");
    add(&client, "c-1", 2).await;
    herald_testkit::wait_until(Duration::from_secs(60), "the index has both events and the stray's dead letter", || {
        let store = store.clone();
        async move { indexed(&store).await == 2 && dead_letters(&store).await == 1 }
    })
    .await;
    let reads = EventStore::new(&config, &events, store.clone()).expect("event store");
    let added = |stream: &[herald_aggregate::Recorded<CounterEvent>]| stream.iter().map(|r| { let CounterEvent::Added(a) = &r.event; (r.version, a.n) }).collect::<Vec<_>>();
    assert_eq!(added(&reads.read_stream::<Counter>("c-1", 1).await.expect("stream")), [(1, 1), (2, 2)]);

    // After the index's position: stopped, then a stray and an event.
    stop_index.cancel();
    indexing.await.expect("index task").expect("index stopped in order");
    publisher.publish(&events_topic, &stray(200)).await.expect("stray published");
    add(&client, "c-1", 3).await;
    assert_eq!(added(&reads.read_stream::<Counter>("c-1", 1).await.expect("stream")), [(1, 1), (2, 2), (3, 3)]);
    // A stray that says it is version 4 (`ce_sequence`), with an id of its own, then the
    // engine's version 4. Before, the reads after the index took the stray as version 4,
    // and then failed on the engine's ("version 4 after version 4").
    let mut forged = publisher.encode(&events_topic, &stray(300), &publisher.metadata_for(&stray(300))).await.expect("encoded");
    forged.headers = forged.headers.insert(rdkafka::message::Header { key: herald_aggregate::headers::SEQUENCE, value: Some(&herald_aggregate::headers::sequence(4)) });
    publisher.send_record(forged).await.expect("forged published");
    add(&client, "c-1", 4).await;
    let stream = [(1, 1), (2, 2), (3, 3), (4, 4)];
    assert_eq!(added(&reads.read_stream::<Counter>("c-1", 1).await.expect("stream")), stream);
    let all = reads.read_all::<Counter>(&LogPosition::default(), 100).await.expect("read all");
    assert_eq!(added(&all.events), stream);
    assert!(all.next.0.values().sum::<i64>() >= 7, "read all moves past the strays: {:?}", all.next);
    // The raw reads, told whose engine writes the topic, skip it too.
    let raw = EventStore::new(&config, &events, store.clone()).expect("event store").written_by(<Counter as herald_aggregate::Aggregate>::NAME);
    assert_eq!(raw.read_stream_raw("c-1", 1).await.expect("raw stream").iter().map(|r| r.version).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(raw.read_all_raw(&LogPosition::default(), 100).await.expect("raw all").events.len(), 4);

    stop.cancel();
    running.await.expect("engine task").expect("engine stopped in order");
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many records the index's projector dead-lettered.
async fn dead_letters(store: &Arc<dyn Store>) -> i64 {
    count(store, "SELECT COUNT(*) FROM herald_dead_letters").await
}

/// One client's bad input must not stall the others: a command whose `ce_replyto` names a
/// topic that does not exist (the test broker creates no topic on its own, as most managed
/// services) is decided and its reply dropped; the next command of the same aggregate is
/// answered and sees the first one's event; and the dropped reply's outcome can still be
/// had by the command's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_topic_that_does_not_exist_stalls_nothing() {
    use herald_aggregate::SendOptions;
    let config: KafkaConfig = herald_testkit::kafka().await;
    let Counted { prefix, commands, replies, stop, running, .. } = start_counter(&config, "replyto", 1).await;

    // The bad command, as a client with a mistyped reply topic sends it.
    let publisher = herald_bus::Publisher::new(&config, herald_bus::PublisherOptions::new("/test/replyto")).expect("publisher");
    let meta = herald_bus::Metadata::new(<Add as herald_bus::Event>::TYPE, "/test/replyto", "c-1");
    let topic = Topic::<CounterCommand>::named(&commands);
    let mut record = publisher.encode(&topic, &Add { counter: "c-1".into(), n: 4 }, &meta).await.expect("encode");
    let missing = format!("{prefix}no-such-replies");
    record.headers = record.headers.insert(rdkafka::message::Header { key: herald_aggregate::headers::REPLY_TO, value: Some(missing.as_str()) });
    publisher.send_record(record).await.expect("sent");

    let client = CommandClient::new(&config, topic.clone(), replies.clone()).await.expect("client").with_timeout(Duration::from_secs(30));
    let next = client.send(Add { counter: "c-1".into(), n: 1 }).await.expect("answered: the partition did not stall");
    assert!(next.is_accepted(), "{next:?}");
    assert_eq!(next.version, Some(2), "the command with the missing reply topic was decided first");
    let again = client.send_with(Add { counter: "c-1".into(), n: 4 }, SendOptions::default().command_id(meta.id)).await.expect("answered");
    assert_eq!((again.is_accepted(), again.version, again.command_id.clone()), (true, Some(1), meta.id.to_string()), "answered from memory, not decided again");
    assert_eq!(admin::partition_count(&config, &missing).await.ok().flatten(), None, "the missing topic was not created by the engine");

    // Once the topic exists, its replies flow without a restart (the engine asks again).
    admin::create_topics(&config, &[TopicSpec::new(missing.as_str()).partitions(1)]).await.expect("create the reply topic");
    herald_testkit::wait_until(Duration::from_secs(60), "a reply on the topic once it exists", || async {
        let meta = herald_bus::Metadata::new(<Add as herald_bus::Event>::TYPE, "/test/replyto", "c-2");
        let mut record = publisher.encode(&topic, &Add { counter: "c-2".into(), n: 1 }, &meta).await.expect("encode");
        record.headers = record.headers.insert(rdkafka::message::Header { key: herald_aggregate::headers::REPLY_TO, value: Some(missing.as_str()) });
        publisher.send_record(record).await.expect("sent");
        herald_testkit::record_count(&config, &missing).await > 0
    })
    .await;

    // Deleted again (a client that made its own reply topic and went away): a command
    // naming it fails its transaction once; the engine then asks again, drops the reply,
    // and the partition goes on. Before, the topic stayed known to exist, and every
    // attempt failed the same way until a restart.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("admin");
    admin.delete_topics(&[missing.as_str()], &rdkafka::admin::AdminOptions::new()).await.expect("delete request").into_iter().for_each(|r| { r.expect("deleted"); });
    herald_testkit::wait_until(Duration::from_secs(30), "the reply topic gone", || async { admin::partition_count(&config, &missing).await.ok().flatten().is_none() }).await;
    let meta = herald_bus::Metadata::new(<Add as herald_bus::Event>::TYPE, "/test/replyto", "c-1");
    let mut record = publisher.encode(&topic, &Add { counter: "c-1".into(), n: 10 }, &meta).await.expect("encode");
    record.headers = record.headers.insert(rdkafka::message::Header { key: herald_aggregate::headers::REPLY_TO, value: Some(missing.as_str()) });
    publisher.send_record(record).await.expect("sent");
    let client = client.with_timeout(Duration::from_secs(90));
    let after = client.send(Add { counter: "c-1".into(), n: 1 }).await.expect("answered: the partition did not stall on the deleted topic");
    assert_eq!((after.is_accepted(), after.version), (true, Some(4)), "the command naming the deleted topic was decided first: {after:?}");
    stop.cancel();
    running.await.expect("engine task").expect("engine ran without error");
}

/// A send whose future is dropped (a caller's own timeout, a cancelled request) gives up
/// its place among the replies awaited: before, it stayed for the life of the client.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_send_stops_waiting_for_its_reply() {
    let config: KafkaConfig = herald_testkit::kafka().await;
    // No engine reads the commands: no reply ever comes.
    let commands = herald_testkit::topic(&config, "agg.dropped", 1).await;
    let replies = herald_testkit::topic(&config, "agg.dropped.replies", 1).await;
    let client = Arc::new(CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies).await.expect("client").with_timeout(Duration::from_secs(120)));
    let sending = {
        let client = client.clone();
        tokio::spawn(async move { client.send(Add { counter: "c-1".into(), n: 1 }).await })
    };
    herald_testkit::wait_until(Duration::from_secs(30), "the command sent and its reply awaited", || async { herald_testkit::record_count(&config, &commands).await == 1 && client.waiting() == 1 }).await;
    sending.abort();
    assert!(sending.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(client.waiting(), 0, "the dropped send no longer waits");
}

/// A command the broker does not take (here its topic does not exist, and the test broker
/// creates none) ends at the send's timeout with an unknown outcome: a record still queued
/// in the producer may be written later. Before, the send waited for the producer (its
/// metadata for the topic, 30 s here; its `message.timeout.ms`, 5 minutes, for a broker
/// that went away), whatever the caller's timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_the_broker_does_not_take_ends_at_its_timeout_with_an_unknown_outcome() {
    let config: KafkaConfig = herald_testkit::kafka().await;
    let commands = herald_testkit::unique("agg.untaken");
    let replies = herald_testkit::topic(&config, "agg.untaken.replies", 1).await;
    let client = CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies).await.expect("client").with_timeout(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(Duration::from_secs(120), client.send(Add { counter: "c-1".into(), n: 1 })).await.expect("the send ends");
    let waited = started.elapsed();
    assert!(matches!(sent, Err(herald_aggregate::SendError::Timeout { .. })), "{sent:?}");
    assert!(sent.as_ref().is_err_and(herald_aggregate::SendError::outcome_unknown));
    assert!(waited < Duration::from_secs(10), "the send took {waited:?}, not its 2 s");
    assert_eq!(admin::partition_count(&config, &commands).await.expect("metadata"), None, "the topic was not created (else the broker took the command)");
}

/// A reply is found by its command's id on the reply topic; an id no command had finds
/// none once every partition was read to its end (here past the commit markers of the
/// engine's transactions), well before `within`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_is_found_by_its_command_id_and_an_unknown_id_finds_none_at_the_end() {
    let config: KafkaConfig = herald_testkit::kafka().await;
    let Counted { replies, commands, stop, running, .. } = start_counter(&config, "lookup", 3).await;
    let client = CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies).await.expect("client").with_timeout(Duration::from_secs(60));
    for i in 0..6 {
        add(&client, &format!("c-{i}"), 1).await;
    }
    let sent = client.send(Add { counter: "c-0".into(), n: 2 }).await.expect("reply");
    let id: uuid::Uuid = sent.command_id.parse().expect("a uuid");
    let found = client.find_reply(id, Duration::from_secs(60)).await.expect("lookup");
    assert_eq!(found.as_ref(), Some(&sent), "the reply the send got");
    let started = std::time::Instant::now();
    let none = client.find_reply(uuid::Uuid::now_v7(), Duration::from_secs(60)).await.expect("lookup");
    assert_eq!(none, None);
    assert!(started.elapsed() < Duration::from_secs(30), "found none at the topic's end, not by waiting out `within`: {:?}", started.elapsed());
    stop.cancel();
    running.await.expect("engine task").expect("engine ran without error");
}

/// A command sent again with its id (a caller's retry) while the first send still waits:
/// both sends get the reply. Before, the second send's entry replaced the first's, which
/// then failed as if the client had closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_sent_again_while_the_first_send_waits_answers_both() {
    use herald_aggregate::{reply::reply_topic, CommandReply, SendOptions};
    let config: KafkaConfig = herald_testkit::kafka().await;
    // No engine reads the commands: the test answers them itself, once both sends wait.
    let commands = herald_testkit::topic(&config, "agg.again", 1).await;
    let replies = herald_testkit::topic(&config, "agg.again.replies", 1).await;
    let client = Arc::new(CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies.clone()).await.expect("client").with_timeout(Duration::from_secs(60)));
    let id = uuid::Uuid::now_v7();
    let sends: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.send_with(Add { counter: "c-1".into(), n: 1 }, SendOptions::default().command_id(id)).await })
        })
        .collect();
    herald_testkit::wait_until(Duration::from_secs(30), "both sends wait", || async { client.waiting() == 2 }).await;
    let publisher = herald_bus::Publisher::new(&config, herald_bus::PublisherOptions::new("/test/again")).expect("publisher");
    publisher.publish(&reply_topic(replies), &CommandReply::accepted(id.to_string(), "c-1", 1, vec![])).await.expect("reply written");
    for send in sends {
        let reply = send.await.expect("send task").expect("answered, not closed");
        assert_eq!((reply.command_id.as_str(), reply.version), (id.to_string().as_str(), Some(1)));
    }
    assert_eq!(client.waiting(), 0);
}

/// Replies on a partition added to the reply topic after the client began are read: the
/// client assigned itself the partitions there were, so such replies were never matched
/// and their sends timed out.
#[tokio::test(flavor = "multi_thread")]
async fn replies_on_a_partition_added_later_are_read() {
    use herald_aggregate::{reply::reply_topic, CommandReply, SendOptions};
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    let config: KafkaConfig = herald_testkit::kafka().await;
    let commands = herald_testkit::topic(&config, "agg.grown", 1).await;
    let replies = herald_testkit::topic(&config, "agg.grown.replies", 1).await;
    let client = Arc::new(CommandClient::new(&config, Topic::<CounterCommand>::named(&commands), replies.clone()).await.expect("client").with_timeout(Duration::from_secs(60)));
    let id = uuid::Uuid::now_v7();
    let sending = {
        let client = client.clone();
        tokio::spawn(async move { client.send_with(Add { counter: "c-1".into(), n: 1 }, SendOptions::default().command_id(id)).await })
    };
    herald_testkit::wait_until(Duration::from_secs(30), "the send waits", || async { client.waiting() == 1 }).await;
    let admin: AdminClient<_> = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("admin");
    let grown = admin.create_partitions(&[NewPartitions::new(&replies, 2)], &AdminOptions::new()).await.expect("create partitions");
    assert!(grown.iter().all(Result::is_ok), "{grown:?}");
    herald_testkit::wait_until(Duration::from_secs(30), "the new partition in the metadata", || async { admin::partition_count(&config, &replies).await.ok().flatten() == Some(2) }).await;
    let publisher = herald_bus::Publisher::new(&config, herald_bus::PublisherOptions::new("/test/grown")).expect("publisher");
    let reply = CommandReply::accepted(id.to_string(), "c-1", 1, vec![]);
    let topic = reply_topic(replies);
    let meta = publisher.metadata_for(&reply);
    let record = publisher.encode(&topic, &reply, &meta).await.expect("encoded").to_partition(1);
    publisher.send_record(record).await.expect("reply written to the new partition");
    let answered = tokio::time::timeout(Duration::from_secs(45), sending).await.expect("answered in time").expect("send task").expect("a reply");
    assert_eq!(answered.command_id, id.to_string());
}
