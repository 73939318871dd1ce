//! The exactly-once engine against the real broker: reactions seen once by read_committed
//! readers, state and deadlines surviving restarts, a crash mid-transaction invisible.
//!
//! Needs `KAFKA_BOOTSTRAP_SERVERS` (see herald-testkit). Every test has its own topics,
//! group, changelog and transactional id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_bus::{KafkaConfig, Metadata, Publisher, PublisherOptions, Topic};
use herald_choreography::declaration::{Output, DEADLINE};
use herald_choreography::engine::{Engine, EngineSettings, ManualClock};
use herald_choreography::{ids, Deadline, Fired, Inputs, Participant, Reaction};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

herald_bus::family! {
    /// The test family.
    #[derive(Debug)]
    pub enum Ev {
        /// In.
        Ping(Ping),
        /// Out.
        Pong(Pong),
        /// Out, from a deadline.
        Expired(Expired),
        /// Out: its `grade` must be a symbol of the schema's enum.
        Graded(Graded),
    }
}

/// An event whose schema refuses some values its Rust type holds (a grade not among the
/// enum's symbols).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Graded {
    id: String,
    grade: String,
}

impl herald_bus::Event for Graded {
    const TYPE: &'static str = "t.Graded";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Graded","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"grade","type":{"type":"enum","name":"Grade","symbols":["A","B"]}}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

/// An input; `deadline_ms > 0` sets a deadline that long after it, `< 0` cancels it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ping {
    id: String,
    deadline_ms: i64,
}

/// The answer: `n` = pings seen for the key so far (the state).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pong {
    id: String,
    n: i32,
}

/// A deadline fired.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Expired {
    id: String,
}

impl herald_bus::Event for Ping {
    const TYPE: &'static str = "t.Ping";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Ping","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"deadline_ms","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}
impl herald_bus::Event for Pong {
    const TYPE: &'static str = "t.Pong";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Pong","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"n","type":"int"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}
impl herald_bus::Event for Expired {
    const TYPE: &'static str = "t.Expired";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Expired","namespace":"t","fields":[{"name":"id","type":"string"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
struct Seen {
    n: i32,
}

enum Input {
    Ev(Ev),
    Fired(Fired),
}

struct Pinger {
    input: Topic<Ev>,
    output: Topic<Ev>,
}

impl Participant for Pinger {
    const NAME: &'static str = "pinger";
    type Input = Input;
    type State = Seen;

    fn inputs(&self) -> Inputs<Input> {
        Inputs::by_subject().on(&self.input, Input::Ev).on_deadline(Input::Fired)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<Pong, _>(&self.output).after(&["t.Ping"]).terminal(), Output::of::<Expired, _>(&self.output).after(&[DEADLINE]).terminal()]
    }

    fn decide(&self, seen: &Seen, input: Input, now: DateTime<Utc>) -> Reaction<Seen> {
        match input {
            Input::Ev(Ev::Ping(p)) => {
                let n = seen.n + 1;
                let mut reaction = Reaction::with_state(Seen { n }).emit(&self.output, Pong { id: p.id.clone(), n });
                if p.deadline_ms > TWIN_DEADLINES {
                    // Two at the same time: `expire` and `also`.
                    let at = now + Duration::from_millis((p.deadline_ms - TWIN_DEADLINES) as u64);
                    reaction = reaction.set_deadline(Deadline::at("expire", at).with_payload(p.id.clone())).set_deadline(Deadline::at("also", at).with_payload(format!("{}.also", p.id)));
                } else if p.deadline_ms > TWO_DEADLINES {
                    // Two: `expire` after the rest, and `later` after twice that.
                    let after = Duration::from_millis((p.deadline_ms - TWO_DEADLINES) as u64);
                    reaction = reaction.set_deadline(Deadline::after("expire", now, after).with_payload(p.id.clone())).set_deadline(Deadline::after("later", now, after * 2).with_payload(format!("{}.later", p.id)));
                } else if p.deadline_ms > 0 {
                    reaction = reaction.set_deadline(Deadline::after("expire", now, Duration::from_millis(p.deadline_ms as u64)).with_payload(p.id));
                } else if p.deadline_ms < 0 {
                    reaction = reaction.cancel_deadline("expire");
                }
                reaction
            }
            Input::Ev(_) => Reaction::keep(),
            Input::Fired(fired) => {
                if let Some(panics) = BROKEN_DEADLINES.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&fired.payload) {
                    *panics += 1;
                    panic!("no expiry for {} yet", fired.payload);
                }
                Reaction::keep().emit(&self.output, Expired { id: fired.payload })
            }
        }
    }
}

/// A ping's `deadline_ms` above this sets two deadlines (see `Pinger`).
const TWO_DEADLINES: i64 = 1_000_000_000;

/// A ping's `deadline_ms` above this sets two deadlines due at the same time.
const TWIN_DEADLINES: i64 = 2_000_000_000;

/// Payloads of deadlines whose reaction panics, with how often it did (tests running at
/// once use their own ids).
static BROKEN_DEADLINES: std::sync::Mutex<std::collections::BTreeMap<String, u32>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts pings by the first letter of their id: state keyed by something other than the
/// Kafka key, so its inputs go through the repartition topic.
struct ByInitial {
    input: Topic<Ev>,
    output: Topic<Ev>,
}

fn initial(e: &Ev) -> String {
    match e {
        Ev::Ping(p) => p.id.chars().take(1).collect(),
        Ev::Pong(p) => p.id.chars().take(1).collect(),
        Ev::Expired(x) => x.id.chars().take(1).collect(),
        Ev::Graded(g) => g.id.chars().take(1).collect(),
    }
}

impl Participant for ByInitial {
    const NAME: &'static str = "by-initial";
    type Input = Ev;
    type State = Seen;

    fn inputs(&self) -> Inputs<Ev> {
        Inputs::new().on_keyed(&self.input, herald_choreography::StateKey::by("initial", initial), |e| e)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<Pong, _>(&self.output).after(&["t.Ping"]).terminal()]
    }

    fn decide(&self, seen: &Seen, input: Ev, _now: DateTime<Utc>) -> Reaction<Seen> {
        match input {
            Ev::Ping(p) => Reaction::with_state(Seen { n: seen.n + 1 }).emit(&self.output, Pong { id: p.id, n: seen.n + 1 }),
            _ => Reaction::keep(),
        }
    }
}

/// [`ByInitial`] with the whole id as its state key.
struct ById(ByInitial);

fn id_of(e: &Ev) -> String {
    match e {
        Ev::Ping(p) => p.id.clone(),
        Ev::Pong(p) => p.id.clone(),
        Ev::Expired(x) => x.id.clone(),
        Ev::Graded(g) => g.id.clone(),
    }
}

impl Participant for ById {
    const NAME: &'static str = "by-id";
    type Input = Ev;
    type State = Seen;

    fn inputs(&self) -> Inputs<Ev> {
        Inputs::new().on_keyed(&self.0.input, herald_choreography::StateKey::by("id", id_of), |e| e)
    }

    fn outputs(&self) -> Vec<Output> {
        self.0.outputs()
    }

    fn decide(&self, seen: &Seen, input: Ev, now: DateTime<Utc>) -> Reaction<Seen> {
        self.0.decide(seen, input, now)
    }
}

struct Setup {
    config: KafkaConfig,
    input: String,
    output: String,
    group: String,
    publisher: Publisher,
}

async fn setup(partitions: i32) -> Setup {
    let config = herald_testkit::kafka().await;
    let input = herald_testkit::topic(&config, "engine.in", partitions).await;
    let output = herald_testkit::topic(&config, "engine.out", partitions).await;
    let group = herald_testkit::unique("engine.group");
    let publisher = Publisher::new(&config, PublisherOptions::new("/test")).expect("publisher");
    Setup { config, input, output, group, publisher }
}

impl Setup {
    fn settings(&self, instance: &str) -> EngineSettings {
        let mut settings = EngineSettings::new(instance);
        settings.group = Some(self.group.clone());
        settings.changelog = Some(format!("{}.changelog", self.group));
        settings.consumer_properties.push(("session.timeout.ms".into(), "6000".into()));
        settings
    }

    fn engine(&self, settings: EngineSettings) -> Engine<Pinger> {
        Engine::new(&self.config, Pinger { input: Topic::named(&self.input), output: Topic::named(&self.output) }, settings).expect("engine")
    }

    /// Publishes a ping; returns its event id.
    async fn ping(&self, id: &str, deadline_ms: i64) -> uuid::Uuid {
        let meta = Metadata::new("t.Ping", "/test", id);
        let topic: Topic<Ev> = Topic::named(&self.input);
        self.publisher.publish_with(&topic, &Ping { id: id.into(), deadline_ms }, meta).await.expect("published").id
    }
}

/// A running engine, stopped in order by `stop`.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), herald_choreography::engine::EngineError>>,
}

fn start<P: Participant>(engine: Engine<P>) -> Running {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(engine.run(async move { token.cancelled().await }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), self.task).await.expect("engine stops in time").expect("engine task");
        result.expect("engine ran without error");
    }
}

fn reader(config: &KafkaConfig, topic: &str, isolation: &str) -> StreamConsumer {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .set("group.id", herald_testkit::unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads `topic` until `count` records arrived (panics after `timeout`), then for `quiet`
/// more, so a record beyond `count` would be seen.
async fn read(config: &KafkaConfig, topic: &str, isolation: &str, count: usize, timeout: Duration, quiet: Duration) -> Vec<OwnedMessage> {
    let out = read_until(config, topic, isolation, count, timeout, quiet).await;
    assert!(out.len() >= count, "timed out reading {topic} ({isolation}): {} of {count} records", out.len());
    out
}

/// Reads `topic` until `count` records arrived or `timeout` passed, then for `quiet` more;
/// returns what it read (the caller says what is missing).
async fn read_until(config: &KafkaConfig, topic: &str, isolation: &str, count: usize, timeout: Duration, quiet: Duration) -> Vec<OwnedMessage> {
    let consumer = reader(config, topic, isolation);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => return out,
        }
    }
    let quiet_until = tokio::time::Instant::now() + quiet;
    while let Ok(Ok(m)) = tokio::time::timeout_at(quiet_until, consumer.recv()).await {
        out.push(m.detach());
    }
    out
}

fn decoded(msg: &OwnedMessage) -> (Metadata, serde_json::Value) {
    let meta = Metadata::from_headers(msg.headers(), msg.key(), "?").expect("metadata");
    let payload = msg.payload().expect("payload");
    let codec = herald_bus::codec::SingleObject::new(<Ev as herald_bus::EventFamily>::schemas().clone());
    let (writer, datum) = codec.split(payload).expect("frame");
    let value = match <Ev as herald_bus::EventFamily>::decode(&writer.name, &writer, datum).expect("decode").expect("known type") {
        Ev::Pong(p) => serde_json::json!({"type": "pong", "id": p.id, "n": p.n}),
        Ev::Expired(e) => serde_json::json!({"type": "expired", "id": e.id}),
        Ev::Ping(p) => serde_json::json!({"type": "ping", "id": p.id}),
        Ev::Graded(g) => serde_json::json!({"type": "graded", "id": g.id, "grade": g.grade}),
    };
    (meta, value)
}

fn ids_of(messages: &[OwnedMessage]) -> Vec<uuid::Uuid> {
    messages.iter().map(|m| decoded(m).0.id).collect()
}

const WAIT: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_input_is_reacted_to_exactly_once_with_state_and_deterministic_ids() {
    let s = setup(3).await;
    let running = start(s.engine(s.settings("a")));
    let mut inputs = HashMap::new();
    for round in 0..3 {
        for k in 0..10 {
            let id = s.ping(&format!("k{k}"), 0).await;
            inputs.insert(id, (format!("k{k}"), round + 1));
        }
    }
    let out = read(&s.config, &s.output, "read_committed", 30, WAIT, QUIET).await;
    assert_eq!(out.len(), 30, "each input once");
    let mut seen = HashSet::new();
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for msg in &out {
        let (meta, value) = decoded(msg);
        assert!(seen.insert(meta.id), "event {} twice", meta.id);
        let cause: uuid::Uuid = meta.causation_id.as_deref().expect("causation").parse().expect("uuid");
        let (key, round) = inputs.get(&cause).expect("caused by an input");
        assert_eq!(meta.id, ids::event_id("pinger", "/test", cause, 0), "deterministic id");
        assert_eq!(value["id"], serde_json::json!(key));
        assert_eq!(value["n"], serde_json::json!(round), "the state counts the key's inputs in order");
        by_key.entry(key.clone()).or_default().push(value["n"].as_i64().unwrap_or_default());
    }
    assert!(by_key.values().all(|ns| ns == &vec![1, 2, 3]), "{by_key:?}");
    running.stop().await;
    let committed = herald_testkit::committed(&s.config, &s.group, &s.input, 3).await;
    let total: i64 = committed.iter().map(|c| c.unwrap_or(0)).sum();
    assert_eq!(total, 30, "the input offsets committed with the reactions: {committed:?}");
}

/// Records without CloudEvents headers (a plain Kafka producer's) are inputs too: each is
/// known by its place in the log, so its outputs get ids of their own, the same at every
/// replay (before, every such input had the nil id, and their outputs one id between them).
/// The producer places keys as the engine expects (murmur2, the Java client's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_without_cloudevents_headers_get_ids_from_their_place_in_the_log() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let s = setup(2).await;
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", s.config.bootstrap()).set("partitioner", "murmur2_random").create().expect("raw producer");
    let topic: Topic<Ev> = Topic::named(&s.input);
    let mut inputs = HashMap::new();
    for k in 0..4 {
        let key = format!("bare{k}");
        let encoded = s.publisher.encode(&topic, &Ping { id: key.clone(), deadline_ms: 0 }, &Metadata::new("t.Ping", "/test", &key)).await.expect("encode");
        let record = FutureRecord::to(&s.input).key(&key).payload(encoded.payload.as_deref().expect("a value"));
        let delivered = raw.send(record, Duration::from_secs(10)).await.expect("sent without headers");
        let (partition, offset) = (delivered.partition, delivered.offset);
        let mut position = Metadata::new("t.Ping", "/test", &key);
        position.id = uuid::Uuid::nil();
        position.identify_by_position(&s.input, partition, offset);
        inputs.insert(position.id, key);
    }
    let running = start(s.engine(s.settings("a")));
    let out = read(&s.config, &s.output, "read_committed", inputs.len(), WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(out.len(), inputs.len(), "each input once");
    let mut seen = HashSet::new();
    for msg in &out {
        let (meta, value) = decoded(msg);
        assert!(seen.insert(meta.id), "event {} twice", meta.id);
        let cause: uuid::Uuid = meta.causation_id.as_deref().expect("causation").parse().expect("uuid");
        let key = inputs.get(&cause).unwrap_or_else(|| panic!("caused by {cause}, not an input's place in the log"));
        assert_eq!(value["id"], serde_json::json!(key));
        // Without headers, the input has no `ce_source`: its source is empty.
        assert_eq!(meta.id, ids::event_id("pinger", "", cause, 0), "deterministic id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_resumes_from_the_committed_state_in_the_changelog() {
    let s = setup(2).await;
    let running = start(s.engine(s.settings("a")));
    for _ in 0..2 {
        for k in 0..5 {
            s.ping(&format!("k{k}"), 0).await;
        }
    }
    read(&s.config, &s.output, "read_committed", 10, WAIT, Duration::ZERO).await;
    running.stop().await;
    for k in 0..5 {
        s.ping(&format!("k{k}"), 0).await;
    }
    let running = start(s.engine(s.settings("a")));
    let out = read(&s.config, &s.output, "read_committed", 15, WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(out.len(), 15, "nothing reacted to twice across the restart");
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for msg in &out {
        let (_, value) = decoded(msg);
        by_key.entry(value["id"].as_str().unwrap_or_default().to_owned()).or_default().push(value["n"].as_i64().unwrap_or_default());
    }
    for (key, ns) in &by_key {
        assert_eq!(ns, &vec![1, 2, 3], "{key}: the third ping sees the state restored from the changelog");
    }
}

/// The broker's cleaner compacts only closed segments: with its default 1 GiB segments a
/// changelog is in practice never compacted, and a restore reads every state ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_changelog_it_creates_is_compacted_in_segments_the_cleaner_can_close() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let s = setup(1).await;
    let mut settings = s.settings("a");
    settings.changelog_configs.push(("min.compaction.lag.ms".into(), "1000".into()));
    settings.changelog_configs.push(("min.cleanable.dirty.ratio".into(), "0.2".into()));
    let changelog = settings.changelog.clone().expect("changelog");
    let running = start(s.engine(settings));
    s.ping("k0", 0).await;
    read(&s.config, &s.output, "read_committed", 1, WAIT, Duration::ZERO).await;
    running.stop().await;
    let admin: AdminClient<_> = rdkafka::ClientConfig::new().set("bootstrap.servers", s.config.bootstrap()).create().expect("admin");
    let described = admin.describe_configs(&[ResourceSpecifier::Topic(&changelog)], &AdminOptions::new()).await.expect("describe");
    let resource = described[0].as_ref().expect("the changelog's configs");
    let value = |name: &str| resource.get(name).and_then(|entry| entry.value.clone());
    assert_eq!(value("cleanup.policy").as_deref(), Some("compact"));
    assert_eq!(value("segment.bytes").as_deref(), Some("16777216"), "16 MiB segments, not the broker's 1 GiB");
    assert_eq!(value("min.cleanable.dirty.ratio").as_deref(), Some("0.2"), "the settings' last value of a name");
    assert_eq!(value("min.compaction.lag.ms").as_deref(), Some("1000"), "a config of the settings' own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_that_came_due_while_down_fires_once_after_the_restart() {
    let s = setup(2).await;
    let start_time = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time");
    let clock = Arc::new(ManualClock::new(start_time));
    let running = start(s.engine(s.settings("a")).with_clock(clock.clone()));
    s.ping("order-1", 60_000).await;
    s.ping("order-2", 0).await;
    // The pongs are committed with the state holding the deadline; it is not due yet.
    let out = read(&s.config, &s.output, "read_committed", 2, WAIT, QUIET).await;
    assert_eq!(out.len(), 2, "no expiry before its time");
    running.stop().await;

    // Down while the deadline comes due.
    let clock = Arc::new(ManualClock::new(start_time + chrono::Duration::minutes(5)));
    let engine = s.engine(s.settings("a")).with_clock(clock.clone());
    let health = engine.health();
    let running = start(engine);
    let out = read(&s.config, &s.output, "read_committed", 3, WAIT, QUIET).await;
    assert_eq!(out.len(), 3, "the deadline fired once");
    let (meta, value) = decoded(&out[2]);
    assert_eq!(value, serde_json::json!({"type": "expired", "id": "order-1"}));
    assert_eq!(meta.subject, "order-1");
    herald_testkit::wait_until(WAIT, "no deadline pending", || {
        let h = health.clone();
        async move { h.deadlines_pending() == 0 && h.committed() > 0 }
    })
    .await;
    running.stop().await;

    // Taken from the state when it fired: a third run does not fire it again.
    let running = start(s.engine(s.settings("a")).with_clock(clock));
    s.ping("order-3", 0).await;
    let out = read(&s.config, &s.output, "read_committed", 4, WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(out.len(), 4);
    assert_eq!(decoded(&out[3]).1["id"], serde_json::json!("order-3"));
}

/// A deadline whose reaction panics is not lost: it stays pending in its key's state, the
/// health check lists it (still healthy), it is set aside (not fired again at every tick,
/// and not in the way of its key's later deadline), the other keys' deadlines fire, and
/// once the bug is fixed a restart fires it, once. (Before, it was taken and dropped: the
/// saga of its key waited for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_whose_reaction_panics_stays_pending_and_fires_after_a_restart() {
    let s = setup(1).await;
    let start_time = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time");
    let clock = Arc::new(ManualClock::new(start_time));
    let engine = s.engine(s.settings("a")).with_clock(clock.clone());
    let health = engine.health();
    let running = start(engine);
    let broken = herald_testkit::unique("broken");
    BROKEN_DEADLINES.lock().unwrap_or_else(|e| e.into_inner()).insert(broken.clone(), 0);
    // `broken` gets `expire` (its reaction panics) at +60 s and `later` at +120 s.
    s.ping(&broken, TWO_DEADLINES + 60_000).await;
    s.ping("fine-1", 60_000).await;
    read(&s.config, &s.output, "read_committed", 2, WAIT, Duration::ZERO).await;
    clock.advance(Duration::from_secs(180));
    let out = read(&s.config, &s.output, "read_committed", 4, WAIT, QUIET).await;
    assert_eq!(out.len(), 4, "the other key's deadline and the broken key's later one fired, not the broken one");
    let expired: Vec<_> = out[2..].iter().map(|m| decoded(m).1).collect();
    assert_eq!(expired, [serde_json::json!({"type": "expired", "id": "fine-1"}), serde_json::json!({"type": "expired", "id": format!("{broken}.later")})]);
    herald_testkit::wait_until(WAIT, "the failing deadline is listed", || {
        let h = health.clone();
        async move { !h.deadlines_failing().is_empty() }
    })
    .await;
    let (healthy, details) = herald_ops::HealthCheck::check(&*health);
    assert!(healthy, "a restart does not fix a bug: {details}");
    let failing = &details["deadlines_failing"];
    assert_eq!(failing["count"], 1, "{details}");
    assert_eq!(failing["first"][0]["key"].as_str(), Some(broken.as_str()), "{details}");
    assert!(failing["first"][0]["reason"].as_str().is_some_and(|r| r.contains("no expiry for")), "{details}");
    // Not fired again at every tick: a deadline set and fired after it does not see it
    // panic again.
    s.ping("fine-2", 1_000).await;
    read(&s.config, &s.output, "read_committed", 5, WAIT, Duration::ZERO).await;
    clock.advance(Duration::from_secs(5));
    let out = read(&s.config, &s.output, "read_committed", 6, WAIT, QUIET).await;
    assert_eq!(decoded(&out[5]).1, serde_json::json!({"type": "expired", "id": "fine-2"}));
    assert_eq!(BROKEN_DEADLINES.lock().unwrap_or_else(|e| e.into_inner()).get(&broken), Some(&1), "it panicked once");
    herald_testkit::wait_until(WAIT, "the broken deadline is the one still pending", || {
        let h = health.clone();
        async move { h.deadlines_pending() == 1 }
    })
    .await;
    running.stop().await;

    // The bug fixed, a restart fires it, once.
    BROKEN_DEADLINES.lock().unwrap_or_else(|e| e.into_inner()).remove(&broken);
    let engine = s.engine(s.settings("a")).with_clock(clock.clone());
    let health = engine.health();
    let running = start(engine);
    let out = read(&s.config, &s.output, "read_committed", 7, WAIT, QUIET).await;
    assert_eq!(out.len(), 7);
    assert_eq!(decoded(&out[6]).1, serde_json::json!({"type": "expired", "id": broken}));
    herald_testkit::wait_until(WAIT, "no deadline pending", || {
        let h = health.clone();
        async move { h.deadlines_pending() == 0 && h.deadlines_failing().is_empty() }
    })
    .await;
    running.stop().await;
}

/// Inputs that arrived while the engine was down go before the deadlines that came due
/// after them, and after those that came due before them: `early`'s cancel arrived before
/// its deadline was due and wins over it; `late`'s deadline was due before its cancel
/// arrived and fires first. One partition, so the old behaviour (the timer firing every
/// overdue deadline at once after the restore, or the backlog going first when it was
/// fetched before the restore ended) fails one of the two either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_arrived_while_down_and_the_deadlines_due_meanwhile_take_turns_by_time() {
    let s = setup(1).await;
    // The engine's clock reads the wall clock's time at first, as the records' timestamps do.
    let start_time = Utc::now();
    let running = start(s.engine(s.settings("a")).with_clock(Arc::new(ManualClock::new(start_time))));
    s.ping("late", 1_000).await;
    s.ping("early", 600_000).await;
    let out = read(&s.config, &s.output, "read_committed", 2, WAIT, QUIET).await;
    assert_eq!(out.len(), 2, "no expiry while the clock stands still");
    running.stop().await;

    // Down: both cancels arrive after `late`'s deadline was due, before `early`'s.
    herald_testkit::wait_until(WAIT, "a second passed since the start", || async move { Utc::now() > start_time + chrono::Duration::milliseconds(1_500) }).await;
    s.ping("early", -1).await;
    s.ping("late", -1).await;
    assert!(Utc::now() < start_time + chrono::Duration::minutes(10), "the cancels came before early's deadline");

    // Back with the clock past both deadlines.
    let running = start(s.engine(s.settings("a")).with_clock(Arc::new(ManualClock::new(start_time + chrono::Duration::minutes(20)))));
    let out = read(&s.config, &s.output, "read_committed", 5, WAIT, QUIET).await;
    running.stop().await;
    let seen: Vec<(String, String, Option<i64>)> = out[2..].iter().map(decoded).map(|(_, v)| (v["type"].as_str().unwrap_or("?").to_owned(), v["id"].as_str().unwrap_or("?").to_owned(), v["n"].as_i64())).collect();
    assert_eq!(out.len(), 5, "two pongs and late's expiry after the restart, no expiry of early: {seen:?}");
    assert_eq!(
        seen,
        [("expired".to_owned(), "late".to_owned(), None), ("pong".to_owned(), "early".to_owned(), Some(2)), ("pong".to_owned(), "late".to_owned(), Some(2))],
        "late's deadline (due before either cancel) first, then the cancels in their order"
    );
}

/// Two deadlines of a key due at the same time (one index entry) both fire before an
/// input that arrived after them while the engine was down. Before, the first took the
/// shared entry, and the second fired after the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_of_a_key_due_at_one_time_both_fire_before_a_later_input_after_a_restart() {
    let s = setup(1).await;
    let start_time = Utc::now();
    let running = start(s.engine(s.settings("a")).with_clock(Arc::new(ManualClock::new(start_time))));
    s.ping("twin", TWIN_DEADLINES + 1_000).await;
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(out.len(), 1, "the pong, no expiry while the clock stands still");
    running.stop().await;

    // Down: the next ping arrives after both deadlines were due.
    herald_testkit::wait_until(WAIT, "a second passed since the start", || async move { Utc::now() > start_time + chrono::Duration::milliseconds(1_500) }).await;
    s.ping("twin", 0).await;

    let running = start(s.engine(s.settings("a")).with_clock(Arc::new(ManualClock::new(start_time + chrono::Duration::minutes(20)))));
    let out = read(&s.config, &s.output, "read_committed", 4, WAIT, QUIET).await;
    running.stop().await;
    let seen: Vec<(String, String)> = out[1..].iter().map(decoded).map(|(_, v)| (v["type"].as_str().unwrap_or("?").to_owned(), v["id"].as_str().unwrap_or("?").to_owned())).collect();
    assert_eq!(out.len(), 4, "both expiries and the second pong: {seen:?}");
    let mut expiries: Vec<&str> = seen[..2].iter().filter(|(kind, _)| kind == "expired").map(|(_, id)| id.as_str()).collect();
    expiries.sort_unstable();
    assert_eq!(expiries, ["twin", "twin.also"], "both deadlines first: {seen:?}");
    assert_eq!(seen[2], ("pong".to_owned(), "twin".to_owned()), "then the ping that came after them: {seen:?}");
}

/// [`Pinger`] reading a second input topic too.
struct TwoTopics {
    pinger: Pinger,
    second: Topic<Ev>,
}

impl Participant for TwoTopics {
    const NAME: &'static str = "two-topics";
    type Input = Input;
    type State = Seen;

    fn inputs(&self) -> Inputs<Input> {
        self.pinger.inputs().on(&self.second, Input::Ev)
    }

    fn outputs(&self) -> Vec<Output> {
        self.pinger.outputs()
    }

    fn decide(&self, seen: &Seen, input: Input, now: DateTime<Utc>) -> Reaction<Seen> {
        self.pinger.decide(seen, input, now)
    }
}

/// With two input topics, a deadline waits for both: `k`'s cancel came on the second
/// topic before its deadline was due, and an unrelated input on the first topic after it.
/// Whichever topic's backlog reaches the engine first after the restart, the cancel wins
/// (the deadline firing before the first topic's later input, ahead of the cancel, was the
/// fault of a bound taken from one input's time alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_waits_for_the_inputs_that_came_before_it_on_every_input_topic() {
    let s = setup(1).await;
    let second = herald_testkit::topic(&s.config, "engine.in2", 1).await;
    let engine = |clock: ManualClock| {
        let pinger = Pinger { input: Topic::named(&s.input), output: Topic::named(&s.output) };
        Engine::new(&s.config, TwoTopics { pinger, second: Topic::named(&second) }, s.settings("a")).expect("engine").with_clock(Arc::new(clock))
    };
    let start_time = Utc::now();
    let due = chrono::Duration::seconds(20);
    let running = start(engine(ManualClock::new(start_time)));
    s.ping("k", due.num_milliseconds()).await;
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(out.len(), 1);
    running.stop().await;

    // Down: the cancel before the deadline is due, on the second topic; after it, on the
    // first, an input of another key.
    let meta = Metadata::new("t.Ping", "/test", "k");
    s.publisher.publish_with(&Topic::<Ev>::named(&second), &Ping { id: "k".into(), deadline_ms: -1 }, meta).await.expect("published");
    assert!(Utc::now() < start_time + due, "the cancel came before the deadline was due (the first run took {:?})", Utc::now() - start_time);
    herald_testkit::wait_until(WAIT, "the deadline is due", || async move { Utc::now() > start_time + due + chrono::Duration::milliseconds(500) }).await;
    s.ping("other", 0).await;

    let running = start(engine(ManualClock::new(start_time + chrono::Duration::minutes(20))));
    let out = read(&s.config, &s.output, "read_committed", 3, WAIT, QUIET).await;
    running.stop().await;
    let seen: Vec<serde_json::Value> = out.iter().map(|m| decoded(m).1).collect();
    assert_eq!(out.len(), 3, "the cancel's pong and the other key's, no expiry: {seen:?}");
    assert!(seen.iter().all(|v| v["type"] == "pong"), "the cancel came before the deadline was due: {seen:?}");
}

/// An engine whose declared output topic is missing refuses to start, saying which: it
/// would fail every transaction, and every partition of the process would wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_whose_output_topic_is_missing_refuses_to_start() {
    let s = setup(1).await;
    let missing = herald_testkit::unique("engine.missing");
    let engine = Engine::new(&s.config, Pinger { input: Topic::named(&s.input), output: Topic::named(&missing) }, s.settings("a")).expect("engine");
    let ended = tokio::time::timeout(WAIT, engine.run(std::future::pending())).await.expect("the engine ends");
    match ended {
        Err(e @ herald_choreography::engine::EngineError::MissingOutput(_)) => {
            assert!(e.is_permanent());
            assert!(e.to_string().contains(&missing), "{e}");
        }
        other => panic!("expected a refusal naming {missing}, got {other:?}"),
    }
}

/// An engine whose every transaction fails (its output topic deleted while it runs) still
/// stops when told: the coordinator went from one failed attempt to the next without
/// looking at the stop (a bench's engine ignored SIGTERM for ten minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_whose_transactions_keep_failing_stops_when_told() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let s = setup(1).await;
    // One reaction per transaction: the commit runs inside the backlog's drain, whose
    // failure sent the coordinator straight back to the drain.
    let mut settings = s.settings("a");
    settings.max_batch = 1;
    // A vanished topic is given up on after 5 s, not librdkafka's default 30 s.
    let config = s.config.clone().set("topic.metadata.propagation.max.ms", "5000");
    let engine = Engine::new(&config, Pinger { input: Topic::named(&s.input), output: Topic::named(&s.output) }, settings).expect("engine");
    let health = engine.health();
    let running = start(engine);
    s.ping("k0", 0).await;
    let first = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(first.len(), 1, "the engine reacts while its output exists");
    let admin: AdminClient<_> = s.config.client_config(&[]).create().expect("admin");
    let deleted = admin.delete_topics(&[s.output.as_str()], &AdminOptions::new()).await.expect("delete the output topic");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    s.ping("k", 0).await;
    herald_testkit::wait_until(WAIT, "transactions fail", || {
        let h = health.clone();
        async move { h.aborted() + h.rebuilt() >= 2 }
    })
    .await;
    running.stop.cancel();
    let asked = std::time::Instant::now();
    // The consumer runtime's drain (30 s) and grace (5 s) for the delivery that never commits.
    let stopped = tokio::time::timeout(Duration::from_secs(60), running.task).await;
    assert!(stopped.is_ok(), "the engine did not stop within 60 s of being told");
    eprintln!("stopped after {:?}", asked.elapsed());
}

/// The crashing process of the next test: an engine that never commits by itself, run
/// until it is killed. Runs only when that test starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by a_crash_mid_transaction_shows_nothing_and_the_rerun_writes_the_same_events"]
async fn crash_child() {
    let Ok(spec) = std::env::var("HERALD_ENGINE_CHILD") else { return };
    let mut parts = spec.split(',');
    let (Some(input), Some(output), Some(group)) = (parts.next(), parts.next(), parts.next()) else { panic!("bad spec {spec}") };
    let config = herald_testkit::kafka().await;
    let publisher = Publisher::new(&config, PublisherOptions::new("/test")).expect("publisher");
    let s = Setup { config, input: input.into(), output: output.into(), group: group.into(), publisher };
    let mut settings = s.settings("a");
    // Never commits by itself: the reactions stay in the open transaction.
    settings.commit_interval = Duration::from_secs(3600);
    settings.commit_when_idle = None;
    settings.max_batch = usize::MAX;
    s.engine(settings).run(std::future::pending()).await.expect("engine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_transaction_shows_nothing_and_the_rerun_writes_the_same_events() {
    let s = setup(2).await;
    for k in 0..5 {
        s.ping(&format!("k{k}"), 0).await;
    }
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env("HERALD_ENGINE_CHILD", format!("{},{},{}", s.input, s.output, s.group))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("child");
    // Produced inside the child's open transaction: visible to read_uncommitted only.
    let uncommitted = read(&s.config, &s.output, "read_uncommitted", 1, WAIT, QUIET).await;
    child.kill().expect("kill -9");
    let _ = child.wait();

    let running = start(s.engine(s.settings("a")));
    let committed = read(&s.config, &s.output, "read_committed", 5, WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(committed.len(), 5, "the crashed transaction's records are not visible, the rerun's are, once each");
    let first: HashSet<uuid::Uuid> = ids_of(&uncommitted).into_iter().collect();
    let rerun: HashSet<uuid::Uuid> = ids_of(&committed).into_iter().collect();
    assert_eq!(rerun.len(), 5);
    assert!(first.is_subset(&rerun), "the rerun wrote the same event ids: {first:?} vs {rerun:?}");
    let all = read(&s.config, &s.output, "read_uncommitted", uncommitted.len() + 5, WAIT, QUIET).await;
    assert_eq!(all.len(), uncommitted.len() + 5, "both writes are in the log; read_committed readers see the rerun's only");
}

/// A predecessor (this instance before a crash or a fatal error) left a transaction open
/// on the changelog, which holds its last stable offset until the broker aborts it after
/// its timeout (a minute here). The engine calls init_transactions as soon as it is
/// assigned partitions, before it restores, as Kafka Streams does: the broker aborts the
/// predecessor's transaction at once and the restore waits for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_left_open_on_the_changelog_is_aborted_before_the_restore_waits_for_it() {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    const TIMEOUT: Duration = Duration::from_secs(60);
    let s = setup(2).await;
    let settings = || {
        let mut settings = s.settings("a");
        settings.transaction_timeout = TIMEOUT;
        settings
    };
    // A first run makes the changelog (and its keys' state).
    let running = start(s.engine(settings()));
    s.ping("k0", 0).await;
    read(&s.config, &s.output, "read_committed", 1, WAIT, Duration::ZERO).await;
    running.stop().await;

    let changelog = settings().changelog.expect("changelog");
    let mut cc = s.config.client_config(&[]);
    cc.set("transactional.id", settings().transactional_id(Pinger::NAME)).set("transaction.timeout.ms", TIMEOUT.as_millis().to_string());
    let predecessor: ThreadedProducer<_> = cc.create().expect("producer");
    predecessor.init_transactions(WAIT).expect("init");
    predecessor.begin_transaction().expect("begin");
    for partition in 0..2 {
        predecessor.send(BaseRecord::<str, [u8]>::to(&changelog).key("left-open").partition(partition)).map_err(|(e, _)| e).expect("send");
    }
    predecessor.flush(WAIT).expect("flushed");
    let holds_back = reader(&s.config, &changelog, "read_committed");
    let (_, stable) = holds_back.fetch_watermarks(&changelog, 0, WAIT).expect("watermarks");
    let (_, high) = reader(&s.config, &changelog, "read_uncommitted").fetch_watermarks(&changelog, 0, WAIT).expect("watermarks");
    assert!(stable < high, "the open transaction holds back the changelog's last stable offset ({stable} < {high})");

    let began = std::time::Instant::now();
    let running = start(s.engine(settings()));
    s.ping("k0", 0).await;
    s.ping("k1", 0).await;
    let out = read(&s.config, &s.output, "read_committed", 3, WAIT + TIMEOUT, QUIET).await;
    let took = began.elapsed() - QUIET;
    running.stop().await;
    drop(predecessor);
    assert!(took < TIMEOUT / 2, "reacted after {took:?}: the restore waited for the predecessor's transaction timeout ({TIMEOUT:?})");
    assert_eq!(out.len(), 3);
    let k0: Vec<i64> = out.iter().map(decoded).filter(|(_, v)| v["id"] == "k0").map(|(_, v)| v["n"].as_i64().unwrap_or_default()).collect();
    assert_eq!(k0, vec![1, 2], "k0's state was restored from the committed changelog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_keyed_otherwise_go_through_the_repartition_topic_exactly_once() {
    let s = setup(3).await;
    let engine = Engine::new(&s.config, ByInitial { input: Topic::named(&s.input), output: Topic::named(&s.output) }, s.settings("a")).expect("engine");
    let running = start(engine);
    // Keyed by id, so spread over the partitions; the state is per first letter.
    let ids = ["a1", "b1", "a2", "c1", "a3", "b2", "a4", "c2", "b3", "a5"];
    for id in ids {
        s.ping(id, 0).await;
    }
    let out = read(&s.config, &s.output, "read_committed", ids.len(), WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(out.len(), ids.len(), "each input once");
    let mut by_initial: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for msg in &out {
        let (meta, value) = decoded(msg);
        assert!(seen.insert(meta.id));
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        by_initial.entry(id[..1].to_owned()).or_default().push(value["n"].as_i64().unwrap_or_default());
    }
    for (initial, mut ns) in by_initial {
        ns.sort();
        let expected: Vec<i64> = (1..=ids.iter().filter(|i| i.starts_with(initial.as_str())).count() as i64).collect();
        assert_eq!(ns, expected, "{initial}: one writer counts every input of the key once");
    }
    // Every record of the input fits in its copy: the repartition topic takes more.
    let limit = |topic: String| {
        let config = s.config.clone();
        async move { herald_bus::admin::topic_config(&config, &topic, "max.message.bytes").await.expect("config").and_then(|v| v.parse::<usize>().ok()).expect("a limit") }
    };
    let source = limit(s.input.clone()).await;
    assert_eq!(limit(format!("by-initial.{}.by-initial", s.input)).await, source + herald_bus::dead_letter::HEADROOM);
}

/// An input whose copy to the repartition topic, keyed by its state key, would be a
/// record larger than the producer takes is dead-lettered, and its partition goes on.
/// (Before, the copy's transaction failed on every try while `/health` said ok, and every
/// later input of the partition waited for good: found by an outside probe with a
/// 600 KB customer id.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_whose_repartition_copy_is_too_large_is_dead_lettered_and_its_partition_goes_on() {
    let s = setup(1).await;
    let dlq = dead_letter_topic(&s).await;
    let engine = Engine::new(&s.config, ById(ByInitial { input: Topic::named(&s.input), output: Topic::named(&s.output) }), s.settings("a")).expect("engine");
    let running = start(engine);
    // 600 kB in the payload under a short key: the copy carries it twice (key and payload).
    let topic: Topic<Ev> = Topic::named(&s.input);
    let ping = Ping { id: "h".repeat(600_000), deadline_ms: 0 };
    let meta = Metadata::new("t.Ping", "/test", "short");
    let huge = meta.id;
    let mut record = s.publisher.encode(&topic, &ping, &meta).await.expect("encoded");
    record.key = Some(b"short".to_vec());
    s.publisher.send_record(record).await.expect("published");
    s.ping("k", 0).await;
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(decoded(&out[0]).1["id"], "k", "the input after the refused one reacted");
    let letters = read(&s.config, &dlq, "read_committed", 1, WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(decoded(&letters[0]).0.id, huge, "the input whose copy is too large is the dead letter");
    let reason = header(&letters[0], "herald.dlq.reason").unwrap_or_default();
    assert!(reason.contains("keyed by its state key") && reason.contains("message.max.bytes"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_reacts_with_state_without_transactions_and_a_restart_resumes_after_the_stored_offsets() {
    let s = setup(3).await;
    let settings = || {
        let mut settings = s.settings("a");
        settings.exactly_once = false;
        settings.consumer_properties.push(("auto.commit.interval.ms".into(), "100".into()));
        settings
    };
    let running = start(s.engine(settings()));
    for _ in 0..2 {
        for k in 0..5 {
            s.ping(&format!("k{k}"), 0).await;
        }
    }
    // Not transactional: read_uncommitted sees the same records as read_committed.
    let out = read(&s.config, &s.output, "read_uncommitted", 10, WAIT, QUIET).await;
    assert_eq!(out.len(), 10, "each input once when nothing fails");
    let mut ns: Vec<i64> = out.iter().map(|m| decoded(m).1["n"].as_i64().expect("n")).collect();
    ns.sort();
    assert_eq!(ns, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2], "the state counts each key's inputs");
    running.stop().await;
    // The offsets were stored and committed: a new run only reacts to the new input, with
    // the state restored from the changelog.
    let running = start(s.engine(settings()));
    s.ping("k0", 0).await;
    let out = read(&s.config, &s.output, "read_committed", 11, WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(out.len(), 11, "nothing reacted to twice after an orderly stop");
    assert!(out.iter().any(|m| decoded(m).1 == serde_json::json!({"type": "pong", "id": "k0", "n": 3})), "state restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_takes_no_100_ms_flush_poll() {
    // rust-rdkafka's `flush` on a ThreadedProducer polled for 100 ms at a time while the
    // producer's thread served the delivery reports: every commit with a record in flight
    // took at least 100 ms. With a 5 ms commit interval a reaction must show much sooner.
    let s = setup(1).await;
    let mut settings = s.settings("a");
    settings.commit_interval = Duration::from_millis(5);
    let running = start(s.engine(settings));
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", s.config.bootstrap())
        .set("group.id", herald_testkit::unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("reader");
    consumer.subscribe(&[s.output.as_str()]).expect("subscribe");
    // The first reaction waits for the group join and the restore: not timed.
    s.ping("warm", 0).await;
    tokio::time::timeout(WAIT, consumer.recv()).await.expect("first pong in time").expect("first pong");
    let mut took = Vec::new();
    for i in 0..7 {
        let started = std::time::Instant::now();
        s.ping(&format!("k{i}"), 0).await;
        tokio::time::timeout(WAIT, consumer.recv()).await.expect("pong in time").expect("pong");
        took.push(started.elapsed());
    }
    running.stop().await;
    took.sort();
    assert!(took[3] < Duration::from_millis(90), "median publish-to-visible {:?} (all {took:?})", took[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_each_input_is_reacted_to_once_in_order_and_nothing_shows_before_its_commit() {
    let s = setup(3).await;
    let mut settings = s.settings("a");
    settings.pipeline = true;
    settings.commit_interval = Duration::from_millis(300);
    settings.commit_when_idle = None;
    settings.max_batch = 100_000;
    let running = start(s.engine(settings));
    let rounds = 20;
    for round in 0..rounds {
        for k in 0..10 {
            s.ping(&format!("k{k}"), 0).await;
        }
        if round == 0 {
            // Uncommitted reactions are invisible to read_committed readers, visible to others.
            let _ = read(&s.config, &s.output, "read_uncommitted", 1, WAIT, Duration::ZERO).await;
        }
    }
    let out = read(&s.config, &s.output, "read_committed", 10 * rounds, WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(out.len(), 10 * rounds, "each input once");
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for msg in &out {
        let (_, value) = decoded(msg);
        by_key.entry(value["id"].as_str().expect("id").to_owned()).or_default().push(value["n"].as_i64().expect("n"));
    }
    for (key, ns) in by_key {
        assert_eq!(ns, (1..=rounds as i64).collect::<Vec<_>>(), "key {key}: the state counts its inputs in order");
    }
}

/// An engine whose future is dropped with its runtime (a test that ends, a process that
/// returns from `main` without stopping it) must let the runtime shut down.
#[test]
fn dropping_the_runtime_under_a_running_engine_lets_it_shut_down() {
    herald_testkit::runtime_drops_within(WAIT, || async {
        let s = setup(3).await;
        let _running = start(s.engine(s.settings("a")));
        s.ping("k0", 0).await;
        let _ = read(&s.config, &s.output, "read_committed", 1, WAIT, Duration::ZERO).await;
        // Left running (dropping the handle does not stop it): the runtime is dropped under it.
    });
}

/// Pongs like [`Pinger`], but its `decide` panics on a ping with `deadline_ms == -1` (a
/// bug hit by one input), grades a ping with `deadline_ms == -2` by its id (which the
/// grade's schema refuses unless it is `A` or `B`), and first sleeps `deadline_ms` on a ping whose id starts with
/// `slow` (a reaction that holds the coordinator, as a slow call inside one would).
struct Fragile {
    input: Topic<Ev>,
    output: Topic<Ev>,
}

impl Participant for Fragile {
    const NAME: &'static str = "fragile";
    type Input = Ev;
    type State = Seen;

    fn inputs(&self) -> Inputs<Ev> {
        Inputs::by_subject().on(&self.input, |e| e)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<Pong, _>(&self.output).after(&["t.Ping"]).terminal(), Output::of::<Graded, _>(&self.output).after(&["t.Ping"]).terminal()]
    }

    fn decide(&self, seen: &Seen, input: Ev, _now: DateTime<Utc>) -> Reaction<Seen> {
        match input {
            Ev::Ping(p) if p.deadline_ms == -1 => panic!("cannot take ping {}", p.id),
            Ev::Ping(p) if p.deadline_ms == -3 => {
                let n = seen.n + 1;
                Reaction::with_state(Seen { n }).emit(&self.output, Pong { id: p.id.repeat(1_048_588 / p.id.len().max(1) + 1), n })
            }
            Ev::Ping(p) if p.deadline_ms == -4 => {
                let n = seen.n + 1;
                Reaction::with_state(Seen { n }).emit(&self.output, Pong { id: p.id.repeat(30_000 / p.id.len().max(1) + 1), n })
            }
            Ev::Ping(p) if p.deadline_ms == -2 => {
                let n = seen.n + 1;
                Reaction::with_state(Seen { n }).emit(&self.output, Pong { id: p.id.clone(), n }).emit(&self.output, Graded { id: p.id.clone(), grade: p.id })
            }
            Ev::Ping(p) => {
                if p.id.starts_with("slow") {
                    SLOW_STARTED.lock().unwrap_or_else(|e| e.into_inner()).insert(p.id.clone());
                    std::thread::sleep(Duration::from_millis(p.deadline_ms as u64));
                }
                Reaction::with_state(Seen { n: seen.n + 1 }).emit(&self.output, Pong { id: p.id, n: seen.n + 1 })
            }
            _ => Reaction::keep(),
        }
    }
}

/// The ids of the slow pings whose reaction began (tests running at once use their own ids).
static SLOW_STARTED: std::sync::Mutex<std::collections::BTreeSet<String>> = std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The ids of the pongs in `out`, in order.
fn pong_ids(out: &[OwnedMessage]) -> Vec<String> {
    out.iter().map(|m| decoded(m).1["id"].as_str().unwrap_or_default().to_owned()).collect()
}

/// A key that murmur2 places on partition `stopped` of two (`on`), or on the other one.
fn key_on(stopped: u32, on: bool) -> String {
    (0..).map(|i| format!("key-{i}")).find(|k| (herald_bus::partitioner::partition_for(k.as_bytes(), 2) == stopped) == on).expect("a key")
}

/// Waits until the engine reports `partition` parked (waiting at a record whose dead
/// letter is not written) and unhealthy; returns the health details.
async fn parked(health: &Arc<herald_choreography::engine::EngineHealth>, partition: u32) -> serde_json::Value {
    herald_testkit::wait_until(WAIT, "a parked partition is reported", || {
        let health = health.clone();
        async move { herald_ops::HealthCheck::check(&*health).1["consumer"]["parked"].as_array().is_some_and(|p| !p.is_empty()) }
    })
    .await;
    let (healthy, details) = herald_ops::HealthCheck::check(&**health);
    assert!(!healthy, "{details}");
    assert_eq!(details["consumer"]["parked"][0]["partition"].as_i64(), Some(i64::from(partition)), "{details}");
    details
}

/// Creates `<input>.dlq`, where the engine dead-letters the input's records.
async fn dead_letter_topic(s: &Setup) -> String {
    let dlq = herald_bus::dead_letter::topic_for(&s.input);
    herald_bus::admin::create_topics(&s.config, &[herald_bus::admin::TopicSpec::new(&dlq).partitions(1)]).await.expect("dead-letter topic");
    dlq
}

fn header<'a>(msg: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    use rdkafka::message::Headers;
    msg.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

/// A panic in `decide` fails its input only: it is dead-lettered with the panic's message,
/// the key's state is unchanged, and the partition's other inputs are reacted to. (Before,
/// the panic ended the coordinator task and every partition waited for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reaction_that_panics_dead_letters_its_input_and_the_partition_goes_on() {
    let s = setup(1).await;
    let dlq = dead_letter_topic(&s).await;
    let engine = Engine::new(&s.config, Fragile { input: Topic::named(&s.input), output: Topic::named(&s.output) }, s.settings("a")).expect("engine");
    let health = engine.health();
    let running = start(engine);
    s.ping("k", 0).await;
    let topic: Topic<Ev> = Topic::named(&s.input);
    let poison = s.publisher.publish_with(&topic, &Ping { id: "k".into(), deadline_ms: -1 }, Metadata::new("t.Ping", "/test", "k")).await.expect("published").id;
    s.ping("k", 0).await;
    s.ping("other", 0).await;
    let out = read(&s.config, &s.output, "read_committed", 3, WAIT, QUIET).await;
    let mut pongs: Vec<(String, i64)> = out.iter().map(|m| decoded(m).1).map(|v| (v["id"].as_str().unwrap_or_default().to_owned(), v["n"].as_i64().unwrap_or_default())).collect();
    pongs.sort();
    assert_eq!(pongs, [("k".to_owned(), 1), ("k".to_owned(), 2), ("other".to_owned(), 1)], "the panic changed no state, the others were reacted to");
    let letters = read(&s.config, &dlq, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(decoded(&letters[0]).0.id, poison, "the input that panicked is the dead letter");
    assert_eq!(header(&letters[0], "herald.dlq.stage"), Some("handler"));
    let reason = header(&letters[0], "herald.dlq.reason").unwrap_or_default();
    assert!(reason.contains("cannot take ping k"), "{reason}");
    assert!(health.committed() > 0);
    running.stop().await;
}

/// An input whose reaction panics while its dead-letter topic is missing is not skipped,
/// and holds its own partition only: its transaction fails once (`aborted` counts it), the
/// engine learns from the delivery reports that the broker refused the letter's topic and
/// hands the input back to its partition's worker, which retries the letter (the health
/// check lists the partition meanwhile) until the topic is made; the other partition goes
/// on. Then the letter is written and the partition goes on. (Before, one answer that the
/// topic did not exist, as a broker just restarted may give, and the input was skipped
/// without a letter: lost. After that, the transaction failed on every try until the topic
/// was made, and every partition of the engine waited.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_waits_for_its_missing_dead_letter_topic_on_its_own_partition_and_is_never_skipped() {
    use herald_bus::partitioner::partition_for;
    let s = setup(2).await;
    let mut settings = s.settings("a");
    settings.create_dead_letter_topics = false;
    let engine = Engine::new(&s.config, Fragile { input: Topic::named(&s.input), output: Topic::named(&s.output) }, settings).expect("engine");
    let health = engine.health();
    let running = start(engine);
    let stopped = partition_for(b"k", 2);
    let (same, other) = (key_on(stopped, true), key_on(stopped, false));
    let topic: Topic<Ev> = Topic::named(&s.input);
    let poison = s.publisher.publish_with(&topic, &Ping { id: "k".into(), deadline_ms: -1 }, Metadata::new("t.Ping", "/test", "k")).await.expect("published").id;
    s.ping(&same, 0).await;
    herald_testkit::wait_until(WAIT, "a transaction failed for want of the dead-letter topic", || {
        let health = health.clone();
        async move { health.aborted() > 0 }
    })
    .await;
    s.ping(&other, 0).await;
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(pong_ids(&out), std::slice::from_ref(&other), "the other partition goes on");
    parked(&health, stopped).await;
    let out = read_until(&s.config, &s.output, "read_committed", 2, Duration::from_millis(500), QUIET).await;
    assert_eq!(pong_ids(&out), std::slice::from_ref(&other), "the input after the poison waits with it");
    let dlq = dead_letter_topic(&s).await;
    let letters = read(&s.config, &dlq, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(decoded(&letters[0]).0.id, poison, "the input that panicked is the dead letter");
    assert_eq!(header(&letters[0], "herald.dlq.stage"), Some("handler"));
    let out = read(&s.config, &s.output, "read_committed", 2, WAIT, QUIET).await;
    let after: Vec<_> = out.iter().map(|m| decoded(m).1).filter(|v| v["id"].as_str() == Some(same.as_str())).collect();
    assert_eq!(after.len(), 1, "the input after the poison was reacted to once");
    assert_eq!(after[0]["n"].as_i64(), Some(1), "on the state the panic left unchanged");
    herald_testkit::wait_until(WAIT, "the partition is no longer reported", || {
        let health = health.clone();
        async move { herald_ops::HealthCheck::check(&*health).0 }
    })
    .await;
    running.stop().await;
}

/// An input whose dead letter is over its dead-letter topic's `max.message.bytes` stops its
/// own partition only: the engine does not write the letter in its transaction but hands
/// the input back to the partition's worker, which cannot write it either and parks the
/// partition (the health check says why), while the other partition's inputs are reacted
/// to. Nothing after the input on its partition is skipped. (Before, the letter failed the
/// transaction on every try, and with it every partition of the engine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_whose_dead_letter_cannot_be_written_parks_its_partition_and_the_others_go_on() {
    use herald_bus::partitioner::partition_for;
    let s = setup(2).await;
    let dlq = herald_bus::dead_letter::topic_for(&s.input);
    herald_bus::admin::create_topics(&s.config, &[herald_bus::admin::TopicSpec::new(&dlq).partitions(1).config("max.message.bytes", "20000")]).await.expect("dead-letter topic");
    let engine = Engine::new(&s.config, Fragile { input: Topic::named(&s.input), output: Topic::named(&s.output) }, s.settings("a")).expect("engine");
    let health = engine.health();
    let running = start(engine);
    // A poison input (its reaction panics) whose key alone is over the letter's limit, a
    // key after it on its partition, and a key on the other partition.
    let poison = "p".repeat(30_000);
    let stopped = partition_for(poison.as_bytes(), 2);
    let (same, other) = (key_on(stopped, true), key_on(stopped, false));
    s.ping(&poison, -1).await;
    s.ping(&same, 0).await;
    s.ping(&other, 0).await;
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(pong_ids(&out), std::slice::from_ref(&other), "the other partition goes on");
    let details = parked(&health, stopped).await;
    let parked = &details["consumer"]["parked"][0];
    assert!(parked["reason"].as_str().is_some_and(|r| r.contains("cannot take ping") && r.contains("max.message.bytes")), "{details}");
    // The other partition keeps going; nothing after the poison on its own partition was
    // reacted to, and no letter was written.
    s.ping(&other, 0).await;
    let out = read_until(&s.config, &s.output, "read_committed", 3, Duration::from_secs(3), QUIET).await;
    assert_eq!(pong_ids(&out), [other.clone(), other], "the input after the poison waits with it");
    assert!(read_until(&s.config, &dlq, "read_uncommitted", 1, Duration::from_millis(500), QUIET).await.is_empty());
    running.stop().await;
}

/// The same with submissions answered at commit (`pipeline` off) and commits inside a
/// submission (`max_batch` 5): the inputs before the poison are reacted to, its partition
/// parks, and the inputs after it, and those published later, wait: none is reacted to or
/// skipped. (A submission answered at a commit before all its inputs were reacted to let
/// its sink take them as done; a later submission then committed past the inputs after
/// the poison.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_after_a_handed_back_one_wait_when_submissions_are_answered_at_commit() {
    let s = setup(1).await;
    let dlq = herald_bus::dead_letter::topic_for(&s.input);
    herald_bus::admin::create_topics(&s.config, &[herald_bus::admin::TopicSpec::new(&dlq).partitions(1).config("max.message.bytes", "20000")]).await.expect("dead-letter topic");
    // Published before the engine starts, so they come in few, large submissions.
    for _ in 0..30 {
        s.ping("k", 0).await;
    }
    s.ping(&"p".repeat(30_000), -1).await;
    for _ in 0..10 {
        s.ping("k", 0).await;
    }
    let mut settings = s.settings("a");
    (settings.pipeline, settings.max_batch) = (false, 5);
    let engine = Engine::new(&s.config, Fragile { input: Topic::named(&s.input), output: Topic::named(&s.output) }, settings).expect("engine");
    let health = engine.health();
    let running = start(engine);
    parked(&health, 0).await;
    for _ in 0..5 {
        s.ping("k", 0).await;
    }
    let out = read_until(&s.config, &s.output, "read_committed", 31, Duration::from_secs(5), QUIET).await;
    let counts: Vec<i64> = out.iter().map(|m| decoded(m).1["n"].as_i64().unwrap_or_default()).collect();
    assert_eq!(counts, (1..=30).collect::<Vec<_>>(), "the 30 inputs before the poison, once each; none after it");
    running.stop().await;
}

/// A reaction whose event its schema refuses (a value from the input that the output's
/// enum does not allow) is not applied in part: the input is dead-lettered saying which
/// event does not encode, none of the reaction's events is sent (the first one encoded),
/// its state is unchanged, and the partition goes on. (Before, that event was dropped and
/// the rest committed: the saga lost its step without a dead letter.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reaction_that_cannot_be_written_dead_letters_its_input_and_changes_nothing() {
    let s = setup(1).await;
    let dlq = dead_letter_topic(&s).await;
    let engine = Engine::new(&s.config, Fragile { input: Topic::named(&s.input), output: Topic::named(&s.output) }, s.settings("a")).expect("engine");
    let running = start(engine);
    let topic: Topic<Ev> = Topic::named(&s.input);
    let grade = |id: &str| Ping { id: id.into(), deadline_ms: -2 };
    s.publisher.publish_with(&topic, &grade("A"), Metadata::new("t.Ping", "/test", "A")).await.expect("published");
    let refused = s.publisher.publish_with(&topic, &grade("k"), Metadata::new("t.Ping", "/test", "k")).await.expect("published").id;
    s.ping("k", 0).await;
    let out = read(&s.config, &s.output, "read_committed", 3, WAIT, QUIET).await;
    let mut seen: Vec<String> = out.iter().map(|m| decoded(m).1).map(|v| format!("{} {} {}", v["id"].as_str().unwrap_or_default(), v["n"], v["grade"])).collect();
    seen.sort();
    assert_eq!(seen, ["A 1 null", "A null \"A\"", "k 1 null"], "A graded; k's refused reaction sent nothing and left its state at 0");
    let letters = read(&s.config, &dlq, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(decoded(&letters[0]).0.id, refused, "the input whose reaction cannot be written is the dead letter");
    assert_eq!(header(&letters[0], "herald.dlq.stage"), Some("handler"));
    let reason = header(&letters[0], "herald.dlq.reason").unwrap_or_default();
    assert!(reason.contains("cannot be written") && reason.contains("t.Graded"), "{reason}");
    running.stop().await;
}

/// A reaction whose event would be a record larger than the producer's
/// `message.max.bytes` is refused like one that does not encode: its input is
/// dead-lettered and the partition goes on. (Before, the producer refused the record, the
/// transaction aborted, and the same input aborted it again on every try: the partition
/// was wedged.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reaction_too_large_to_send_dead_letters_its_input_and_the_partition_goes_on() {
    let s = setup(1).await;
    let dlq = dead_letter_topic(&s).await;
    let engine = Engine::new(&s.config, Fragile { input: Topic::named(&s.input), output: Topic::named(&s.output) }, s.settings("a")).expect("engine");
    let running = start(engine);
    let topic: Topic<Ev> = Topic::named(&s.input);
    let huge = s.publisher.publish_with(&topic, &Ping { id: "k".into(), deadline_ms: -3 }, Metadata::new("t.Ping", "/test", "k")).await.expect("published").id;
    s.ping("k", 0).await;
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    let pong = decoded(&out[0]).1;
    assert_eq!((pong["id"].as_str(), pong["n"].as_i64()), (Some("k"), Some(1)), "the refused reaction changed no state");
    let letters = read(&s.config, &dlq, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(decoded(&letters[0]).0.id, huge, "the input whose reaction is too large is the dead letter");
    let reason = header(&letters[0], "herald.dlq.reason").unwrap_or_default();
    assert!(reason.contains("t.Pong") && reason.contains("message.max.bytes = 1048588"), "{reason}");
    running.stop().await;
}

/// An output topic whose own `max.message.bytes` (20 000 here) is below the producer's:
/// the engine's batches to it stay under that limit (the broker refuses a larger batch,
/// and librdkafka does not split it: every transaction failed), and a reaction whose
/// event would be over it (30 000 bytes) dead-letters its input as one over the
/// producer's limit does, the partition going on. (Before, either wedged the partition.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_topic_with_a_lower_record_limit_gets_batches_it_takes_and_no_record_over_it() {
    let mut s = setup(1).await;
    s.output = herald_testkit::unique("engine.small");
    let spec = herald_bus::admin::TopicSpec::new(&s.output).partitions(1).config("max.message.bytes", "20000");
    herald_bus::admin::create_topics(&s.config, &[spec]).await.expect("output topic");
    let dlq = dead_letter_topic(&s).await;
    const INPUTS: usize = 2_000;
    let topic: Topic<Ev> = Topic::named(&s.input);
    // A backlog, so the engine's producer has many records for the output at once.
    let pings: Vec<Ping> = (0..INPUTS).map(|i| Ping { id: format!("key-{:04}-{}", i % 100, "x".repeat(100)), deadline_ms: 0 }).collect();
    assert!(s.publisher.publish_all(&topic, &pings).await.iter().all(Result::is_ok), "published");
    let large = s.publisher.publish_with(&topic, &Ping { id: "large".into(), deadline_ms: -4 }, Metadata::new("t.Ping", "/test", "large")).await.expect("published").id;
    s.ping("after", 0).await;
    let engine = Engine::new(&s.config, Fragile { input: Topic::named(&s.input), output: Topic::named(&s.output) }, s.settings("a")).expect("engine");
    let running = start(engine);
    let out = read(&s.config, &s.output, "read_committed", INPUTS + 1, WAIT, QUIET).await;
    assert_eq!(out.len(), INPUTS + 1, "one output per input but the large one's");
    assert_eq!(decoded(&out[INPUTS]).1["id"].as_str(), Some("after"), "the input after the large one was reacted to");
    let letters = read(&s.config, &dlq, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(decoded(&letters[0]).0.id, large, "the input whose event is over the topic's limit is the dead letter");
    let reason = header(&letters[0], "herald.dlq.reason").unwrap_or_default();
    assert!(reason.contains("t.Pong") && reason.contains("20000"), "{reason}");
    running.stop().await;
}

/// A transaction that stays open on an input partition (a producer began one and never
/// ends it: to a reader, what a hanging transaction looks like) makes the engine unhealthy
/// once `hanging_input_after` passed, naming the partition and what an operator does; it
/// is healthy again once the transaction ends. (Before, the engine waited with nothing to
/// show: an outside probe saw a repartition topic held so for 5 minutes, /health 200.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_partition_held_by_an_open_transaction_is_reported_until_it_ends() {
    use rdkafka::producer::{BaseRecord, Producer};
    let s = setup(1).await;
    let mut settings = s.settings("a");
    settings.hanging_input_after = Duration::from_secs(3);
    let engine = s.engine(settings);
    let health = engine.health();
    let running = start(engine);
    s.ping("k", 0).await;
    read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert!(herald_ops::HealthCheck::check(&*health).0, "healthy before");
    let holder: rdkafka::producer::BaseProducer =
        s.config.client_config(&[]).set("transactional.id", herald_testkit::unique("holder")).set("transaction.timeout.ms", "300000").create().expect("producer");
    tokio::task::block_in_place(|| {
        holder.init_transactions(WAIT).expect("init");
        holder.begin_transaction().expect("begin");
        holder.send(BaseRecord::to(&s.input).key("held").payload("never committed")).map_err(|(e, _)| e).expect("send");
        holder.flush(WAIT).expect("flushed");
    });
    herald_testkit::wait_until(WAIT, "the engine reports the held partition", || async { health.hanging().is_some() }).await;
    assert!(!herald_ops::HealthCheck::check(&*health).0, "unhealthy while held");
    let reason = health.hanging().unwrap_or_default();
    assert!(reason.contains(&format!("{}/0", s.input)) && reason.contains("find-hanging"), "{reason}");
    tokio::task::block_in_place(|| holder.abort_transaction(WAIT)).expect("abort");
    herald_testkit::wait_until(WAIT, "healthy again once the transaction ended", || async { health.hanging().is_none() }).await;
    assert!(herald_ops::HealthCheck::check(&*health).0, "healthy after");
    running.stop().await;
}

/// An input that gains partitions while the engine runs moves keys to other partitions
/// than their state's: the engine stops with an error naming the topic and both counts,
/// says so on /health, and dead-letters nothing (the records wait in their topic). Before,
/// each record a producer placed by the new count was dead-lettered as misplaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_that_gains_partitions_stops_the_engine_and_dead_letters_nothing() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let s = setup(2).await;
    let dlq = dead_letter_topic(&s).await;
    let engine = s.engine(s.settings("a"));
    let health = engine.health();
    let running = start(engine);
    s.ping("k0", 0).await;
    assert_eq!(read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await.len(), 1, "the engine reacts");
    let admin: AdminClient<_> = s.config.client_config(&[]).create().expect("admin");
    let grown = admin.create_partitions(&[NewPartitions::new(&s.input, 3)], &AdminOptions::new()).await.expect("create partitions");
    assert!(grown.iter().all(Result::is_ok), "{grown:?}");
    // A producer that knows the new count: a key it puts on partition 0 or 1, where two
    // partitions would put it on the other one.
    let place = |key: &str, n| herald_bus::partitioner::partition_for(key.as_bytes(), n) as i32;
    let key = (0..).map(|i| format!("g{i}")).find(|k| place(k, 3) < 2 && place(k, 3) != place(k, 2)).expect("such a key");
    let topic: Topic<Ev> = Topic::named(&s.input);
    let encoded = s.publisher.encode(&topic, &Ping { id: key.clone(), deadline_ms: 0 }, &Metadata::new("t.Ping", "/test", &key)).await.expect("encode");
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", s.config.bootstrap()).create().expect("raw producer");
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&s.input).key(key.as_str()).payload(encoded.payload.as_deref().expect("a value")).partition(place(&key, 3));
    raw.send(record, Duration::from_secs(10)).await.expect("sent");
    let ended = tokio::time::timeout(WAIT, running.task).await.expect("the engine ends").expect("engine task");
    match ended {
        Err(herald_choreography::engine::EngineError::Partitions(reason)) => {
            assert!(reason.contains(&format!("input topic {} has 3 partitions, the engine started with 2", s.input)), "{reason}");
        }
        other => panic!("expected the engine to stop on the grown input, got {other:?}"),
    }
    let (healthy, details) = herald_ops::HealthCheck::check(&*health);
    assert!(!healthy, "{details}");
    let probe: rdkafka::consumer::BaseConsumer = s.config.client_config(&[]).create().expect("client");
    let (_, letters) = rdkafka::consumer::Consumer::fetch_watermarks(&probe, &dlq, 0, Duration::from_secs(10)).expect("watermarks");
    assert_eq!(letters, 0, "nothing was dead-lettered");
}

/// A participant whose `initial` panics for key `doom`: a panic outside any reaction.
struct Doomed(Pinger);

impl Participant for Doomed {
    const NAME: &'static str = "doomed";
    type Input = Input;
    type State = Seen;

    fn inputs(&self) -> Inputs<Input> {
        self.0.inputs()
    }

    fn outputs(&self) -> Vec<Output> {
        self.0.outputs()
    }

    fn initial(&self, key: &str) -> Seen {
        assert_ne!(key, "doom", "no state for doom");
        Seen::default()
    }

    fn decide(&self, seen: &Seen, input: Input, now: DateTime<Utc>) -> Reaction<Seen> {
        self.0.decide(seen, input, now)
    }
}

/// When the coordinator task ends while the engine runs, the engine ends with an error and
/// `/health` says unhealthy. (Before, the engine ran on, every partition waiting for
/// commits that never came, and /health stayed green.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_engine_ends_with_an_error_when_its_coordinator_ends() {
    let s = setup(1).await;
    let engine = Engine::new(&s.config, Doomed(Pinger { input: Topic::named(&s.input), output: Topic::named(&s.output) }), s.settings("a")).expect("engine");
    let health = engine.health();
    let running = start(engine);
    s.ping("doom", 0).await;
    let result = tokio::time::timeout(WAIT, running.task).await.expect("the engine ends").expect("engine task");
    match result {
        Err(herald_choreography::engine::EngineError::Coordinator(reason)) => assert!(reason.contains("no state for doom"), "{reason}"),
        other => panic!("expected the coordinator's end, got {other:?}"),
    }
    let (healthy, details) = herald_ops::HealthCheck::check(&*health);
    assert!(!healthy, "{details}");
}

/// An input keyed by the Kafka key is decided only where its aggregate's one writer is:
/// a record whose key is not its event's aggregate id, or one on another partition than
/// its aggregate id's (a producer with another partitioner, a partition chosen by hand),
/// would be decided against another copy of the state, a second writer. Both are
/// dead-lettered, saying why, and so is a record without a key, wherever it landed (its
/// partition is chance: taking the lucky ones would decide some of an aggregate's records
/// and not others).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_keyed_otherwise_or_on_another_partition_than_its_aggregate_is_dead_lettered() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let s = setup(2).await;
    let dlq = dead_letter_topic(&s).await;
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", s.config.bootstrap()).create().expect("raw producer");
    let topic: Topic<Ev> = Topic::named(&s.input);
    let home = |id: &str| herald_bus::partitioner::partition_for(id.as_bytes(), 2) as i32;
    // (key, event id, partition)
    let send = |key: Option<&'static str>, id: &'static str, partition: i32| {
        let (raw, topic, publisher, input) = (&raw, &topic, &s.publisher, &s.input);
        async move {
            let encoded = publisher.encode(topic, &Ping { id: id.into(), deadline_ms: 0 }, &Metadata::new("t.Ping", "/test", id)).await.expect("encode");
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(input).payload(encoded.payload.as_deref().expect("a value")).partition(partition);
            if let Some(key) = key {
                record = record.key(key);
            }
            raw.send(record, Duration::from_secs(10)).await.expect("sent");
        }
    };
    send(Some("a"), "b", home("a")).await; // keyed otherwise
    send(None, "c", home("c")).await; // keyless, on its aggregate's partition by chance
    send(None, "e", 1 - home("e")).await; // keyless, elsewhere
    send(Some("d"), "d", home("d")).await; // where it belongs
    send(Some("f"), "f", 1 - home("f")).await; // keyed right, on the other partition
    let running = start(s.engine(s.settings("a")));
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    let ids: Vec<String> = out.iter().map(|m| decoded(m).1["id"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(ids, ["d"], "only the record keyed by its aggregate, on its partition");
    let letters = read(&s.config, &dlq, "read_committed", 4, WAIT, QUIET).await;
    let mut reasons: Vec<(Option<&[u8]>, &str)> = letters.iter().map(|l| (l.key(), header(l, "herald.dlq.reason").unwrap_or_default())).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for (id, (key, reason)) in ["c", "e"].iter().zip(&reasons[..2]) {
        assert_eq!(*key, None, "a keyless record stays keyless: {reasons:?}");
        assert!(reason.contains(&format!("a record of \"{id}\" without a key")), "{reason}");
    }
    assert_eq!(reasons[2].0, Some(&b"a"[..]));
    assert!(reasons[2].1.contains("second writer"), "{}", reasons[2].1);
    assert_eq!(reasons[3].0, Some(&b"f"[..]));
    assert!(reasons[3].1.contains(&format!("murmur2 puts \"f\" on partition {}", home("f"))) && reasons[3].1.contains("partitioner=murmur2_random"), "{}", reasons[3].1);
    running.stop().await;
}

/// Sends bytes no reader can decode, keyed `key`, to the input, on `key`'s partition.
async fn send_garbage(s: &Setup, key: &str) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", s.config.bootstrap()).set("partitioner", "murmur2_random").create().expect("raw producer");
    raw.send(FutureRecord::<str, [u8]>::to(&s.input).key(key).payload(&b"not avro"[..]), Duration::from_secs(10)).await.expect("sent");
}

/// A record the engine cannot decode goes to `<input>.dlq`, which the engine creates, and
/// its partition goes on. Before, the engine made no dead-letter topic: on a broker that
/// creates none by itself, the dead letter was retried for ever and the partition's later
/// inputs waited behind it, the engine reporting healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_input_goes_to_the_dead_letter_topic_the_engine_makes() {
    let s = setup(2).await;
    send_garbage(&s, "x").await;
    s.ping("x", 0).await;
    let running = start(s.engine(s.settings("a")));
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(out.len(), 1, "the input after the bad one was reacted to");
    let letters = read(&s.config, &herald_bus::dead_letter::topic_for(&s.input), "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key(), Some(&b"x"[..]));
    running.stop().await;
}

herald_bus::family! {
    /// Events the test participants do not read: their schemas are unknown to them.
    #[derive(Debug)]
    pub enum Stranger {
        /// Written to the participants' input beside their own events.
        Gift(Gift),
    }
}

/// An event type outside the participants' family.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gift {
    id: String,
}

impl herald_bus::Event for Gift {
    const TYPE: &'static str = "t.Gift";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Gift","namespace":"t","fields":[{"name":"id","type":"string"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

/// Publishes a `t.Gift` of `id` (keyed `id`) to the input: a type the participant does not read.
async fn gift(s: &Setup, id: &str) {
    let topic: Topic<Stranger> = Topic::named(&s.input);
    s.publisher.publish(&topic, &Gift { id: id.into() }).await.expect("published");
}

/// An event of a type outside the input's family, whose schema the engine does not know
/// (its `ce_type` says what it is), is dead-lettered at stage `unknown-type` by default
/// (before, at stage `decode`, as undecodable bytes); with `UnknownTypes::Skip` it is moved
/// past in the transaction with no reaction and no dead letter. Either way the input after
/// it is reacted to, and both offsets commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_of_an_unknown_type_is_dead_lettered_as_such_or_skipped_when_told() {
    for policy in [herald_bus::UnknownTypes::DeadLetter, herald_bus::UnknownTypes::Skip] {
        let s = setup(1).await;
        gift(&s, "k").await;
        s.ping("k", 0).await;
        let mut settings = s.settings("a");
        settings.unknown_types = policy;
        let running = start(s.engine(settings));
        let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
        assert_eq!(out.len(), 1, "{policy:?}: the ping after the gift was reacted to, once");
        assert_eq!(decoded(&out[0]).1["n"], serde_json::json!(1), "{policy:?}: the gift changed no state");
        running.stop().await;
        let committed = herald_testkit::committed(&s.config, &s.group, &s.input, 1).await;
        assert_eq!(committed, [Some(2)], "{policy:?}: both inputs moved past");
        // Any letter was written in a transaction that committed before the offsets above.
        let dlq = herald_bus::dead_letter::topic_for(&s.input);
        match policy {
            herald_bus::UnknownTypes::Skip => assert_eq!(herald_testkit::record_count(&s.config, &dlq).await, 0, "skipped: no dead letter"),
            herald_bus::UnknownTypes::DeadLetter => {
                let letters = read(&s.config, &dlq, "read_committed", 1, WAIT, QUIET).await;
                assert_eq!(letters.len(), 1);
                assert_eq!(header(&letters[0], "herald.dlq.stage"), Some("unknown-type"));
                let reason = header(&letters[0], "herald.dlq.reason").unwrap_or_default();
                assert!(reason.contains("t.Gift"), "{reason}");
            }
        }
    }
}

/// The same through a repartition topic: with `UnknownTypes::Skip`, a gift is not copied
/// and not dead-lettered, and the copier's offsets move past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_of_an_unknown_type_is_not_copied_to_the_repartition_topic_when_skipped() {
    let s = setup(1).await;
    gift(&s, "a0").await;
    s.ping("a1", 0).await;
    gift(&s, "a2").await;
    s.ping("a3", 0).await;
    let mut settings = s.settings("a");
    settings.unknown_types = herald_bus::UnknownTypes::Skip;
    let engine = Engine::new(&s.config, ByInitial { input: Topic::named(&s.input), output: Topic::named(&s.output) }, settings).expect("engine");
    let running = start(engine);
    let out = read(&s.config, &s.output, "read_committed", 2, WAIT, QUIET).await;
    let mut ns: Vec<_> = out.iter().map(|m| decoded(m).1["n"].as_i64().unwrap_or_default()).collect();
    ns.sort();
    assert_eq!(ns, [1, 2], "the two pings, once each");
    running.stop().await;
    // Everything the copier wrote committed before the offsets below: a reader sees it all.
    let copies = read(&s.config, &format!("by-initial.{}.by-initial", s.input), "read_committed", 2, WAIT, QUIET).await;
    assert_eq!(copies.len(), 2, "only the pings were copied");
    assert!(copies.iter().all(|m| header(m, "ce_type") == Some("t.Ping")));
    assert_eq!(herald_testkit::record_count(&s.config, &herald_bus::dead_letter::topic_for(&s.input)).await, 0, "no dead letter");
    let committed = herald_testkit::committed(&s.config, &format!("{}.repartition", s.group), &s.input, 1).await;
    assert_eq!(committed, [Some(4)], "the copier moved past all four");
}

/// Told not to make its dead-letter topics, the engine's partition waits for a dead letter
/// whose topic is missing, and says so: unhealthy, naming the topic; once the topic
/// exists, the letter is written and the partition goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_waiting_for_its_topic_makes_the_engine_unhealthy_until_the_topic_exists() {
    let s = setup(1).await;
    send_garbage(&s, "x").await;
    s.ping("x", 0).await;
    let mut settings = s.settings("a");
    settings.create_dead_letter_topics = false;
    let engine = s.engine(settings);
    let health = engine.health();
    let running = start(engine);
    let dlq = herald_bus::dead_letter::topic_for(&s.input);
    herald_testkit::wait_until(WAIT, "the engine reports the waiting dead letter", || async {
        let (healthy, details) = herald_ops::HealthCheck::check(&*health);
        !healthy && details.to_string().contains(&dlq)
    })
    .await;
    assert_eq!(herald_bus::admin::partition_count(&s.config, &dlq).await.expect("metadata"), None, "not made by the engine");
    herald_bus::admin::create_topics(&s.config, &[herald_bus::admin::TopicSpec::new(&dlq).partitions(1)]).await.expect("dead-letter topic");
    let out = read(&s.config, &s.output, "read_committed", 1, WAIT, QUIET).await;
    assert_eq!(out.len(), 1, "the partition went on");
    herald_testkit::wait_until(WAIT, "healthy again", || async { herald_ops::HealthCheck::check(&*health).0 }).await;
    running.stop().await;
}

/// Producers on librdkafka's default partitioner (`consistent_random`: CRC-32, the
/// default of confluent-kafka's Python, Go and .NET clients and of kcat) put most keys on
/// other partitions than Java's and Herald's murmur2. An engine told so
/// (`input_partitioner`) takes every record they wrote; and librdkafka placed each key
/// where `Partitioner::Crc32` says, an implementation Herald does not share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_told_its_producers_partitioner_takes_what_librdkafkas_default_placed() {
    use herald_bus::partitioner::Partitioner;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let s = setup(3).await;
    // librdkafka's own default, not set by name: what a user of its clients gets.
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", s.config.bootstrap()).create().expect("raw producer");
    let topic: Topic<Ev> = Topic::named(&s.input);
    let keys: Vec<String> = (0..30).map(|i| format!("crc-{i}")).collect();
    let mut moved = 0;
    for key in &keys {
        let encoded = s.publisher.encode(&topic, &Ping { id: key.clone(), deadline_ms: 0 }, &Metadata::new("t.Ping", "/test", key)).await.expect("encode");
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&s.input).key(key.as_str()).payload(encoded.payload.as_deref().expect("a value"));
        let partition = raw.send(record, Duration::from_secs(10)).await.expect("sent").partition;
        assert_eq!(partition as u32, Partitioner::Crc32.partition(key.as_bytes(), 3), "librdkafka's default placed {key}");
        moved += usize::from(Partitioner::Crc32.partition(key.as_bytes(), 3) != Partitioner::Murmur2.partition(key.as_bytes(), 3));
    }
    assert!(moved > 0, "some keys land elsewhere than murmur2 puts them (else this test tried nothing)");
    let mut settings = s.settings("a");
    settings.input_partitioner = Some(Partitioner::Crc32);
    let running = start(s.engine(settings));
    let out = read(&s.config, &s.output, "read_committed", keys.len(), WAIT, QUIET).await;
    let mut ids: Vec<String> = out.iter().map(|m| decoded(m).1["id"].as_str().unwrap_or_default().to_owned()).collect();
    ids.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(ids, expected, "each record once");
    running.stop().await;
}

/// A configuration whose `partitioner` is librdkafka's default makes Herald's own
/// producers place keys by CRC-32; the engine, its input partitioner left alone, follows
/// it, and takes what a publisher with that configuration wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_engine_expects_the_partitioner_its_configuration_gives_herald_s_producers() {
    use herald_bus::partitioner::Partitioner;
    let s = setup(3).await;
    let config = s.config.clone().set("partitioner", "consistent_random");
    let publisher = Publisher::new(&config, PublisherOptions::new("/test")).expect("publisher");
    let topic: Topic<Ev> = Topic::named(&s.input);
    let keys: Vec<String> = (0..12).map(|i| format!("cfg-{i}")).collect();
    for key in &keys {
        let published = publisher.publish_with(&topic, &Ping { id: key.clone(), deadline_ms: 0 }, Metadata::new("t.Ping", "/test", key)).await.expect("published");
        assert_eq!(published.partition as u32, Partitioner::Crc32.partition(key.as_bytes(), 3), "{key} placed by CRC-32");
    }
    let engine = Engine::new(&config, Pinger { input: Topic::named(&s.input), output: Topic::named(&s.output) }, s.settings("a")).expect("engine");
    let running = start(engine);
    let out = read(&s.config, &s.output, "read_committed", keys.len(), WAIT, QUIET).await;
    assert_eq!(out.len(), keys.len(), "each record taken, none dead-lettered as misplaced");
    running.stop().await;
}

/// Sets a deadline at `now` on a ping; each time it fires, emits `Expired` and sets it
/// again at `now`, which is already due.
struct Relentless {
    input: Topic<Ev>,
    output: Topic<Ev>,
}

impl Participant for Relentless {
    const NAME: &'static str = "relentless";
    type Input = Input;
    type State = Seen;

    fn inputs(&self) -> Inputs<Input> {
        Inputs::by_subject().on(&self.input, Input::Ev).on_deadline(Input::Fired)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<Pong, _>(&self.output).after(&["t.Ping"]).terminal(), Output::of::<Expired, _>(&self.output).after(&[DEADLINE]).terminal()]
    }

    fn decide(&self, seen: &Seen, input: Input, now: DateTime<Utc>) -> Reaction<Seen> {
        let again = |id: String| Deadline::after("again", now, Duration::ZERO).with_payload(id);
        match input {
            Input::Ev(Ev::Ping(p)) if p.deadline_ms > 0 => Reaction::keep().set_deadline(again(p.id)),
            Input::Ev(Ev::Ping(p)) => Reaction::with_state(Seen { n: seen.n + 1 }).emit(&self.output, Pong { id: p.id, n: seen.n + 1 }),
            Input::Ev(_) => Reaction::keep(),
            Input::Fired(fired) => Reaction::keep().emit(&self.output, Expired { id: fired.payload.clone() }).set_deadline(again(fired.payload)),
        }
    }
}

/// A deadline set again at (or before) `now` each time it fires fires once per tick, and
/// everything else goes on. (Before, the timer fired it until none was due, which with the
/// clock standing still never ended: nothing else was reacted to or committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_set_again_at_now_fires_once_per_tick_and_stalls_nothing() {
    let s = setup(1).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let engine = Engine::new(&s.config, Relentless { input: Topic::named(&s.input), output: Topic::named(&s.output) }, s.settings("a")).expect("engine").with_clock(clock);
    let running = start(engine);
    s.ping("loop", 1).await;
    let consumer = reader(&s.config, &s.output, "read_committed");
    let mut expired = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while expired < 3 {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) if decoded(&m.detach()).1["type"] == "expired" => expired += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("reading: {e}"),
            Err(_) => panic!("timed out: {expired} expirations committed"),
        }
    }
    s.ping("k", 0).await;
    loop {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) if decoded(&m.detach()).1 == serde_json::json!({"type": "pong", "id": "k", "n": 1}) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("reading: {e}"),
            Err(_) => panic!("timed out: the other input was never reacted to"),
        }
    }
    running.stop().await;
}

/// A commit whose `commit_transaction` times out may still commit: its `EndTxn` reached
/// the coordinator, which completes it. The engine then learns the outcome (the next
/// producer's `init_transactions` waits for it, the group's committed offsets tell it)
/// instead of reacting to the inputs again, which wrote their events a second time. Here
/// the engine waits for no commit (`commit_timeout` zero) while librdkafka's call goes on
/// and lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_that_timed_out_but_landed_is_not_reacted_to_again() {
    let s = setup(3).await;
    let mut settings = s.settings("a");
    settings.commit_timeout = Duration::ZERO;
    let engine = s.engine(settings);
    let health = engine.health();
    let running = start(engine);
    let mut inputs = HashMap::new();
    // Round by round, each in transactions of its own (each commit "times out": the engine
    // does not wait for it while librdkafka's call goes on), until two landed.
    let mut rounds = 0;
    while health.commits_in_doubt() < 2 {
        assert!(rounds < 40, "in {rounds} rounds only {} commits landed after a timeout ({} rebuilt)", health.commits_in_doubt(), health.rebuilt());
        rounds += 1;
        for k in 0..10 {
            let id = s.ping(&format!("k{k}"), 0).await;
            inputs.insert(id, (format!("k{k}"), rounds));
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while health.reactions() < 10 * rounds as u64 {
            assert!(tokio::time::Instant::now() < deadline, "round {rounds}: {} reactions committed", health.reactions());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("{rounds} rounds; commits: {} committed, {} rebuilt, {} landed after a timeout", health.committed(), health.rebuilt(), health.commits_in_doubt());
    let out = read(&s.config, &s.output, "read_committed", 10 * rounds, WAIT, Duration::from_secs(3)).await;
    let mut seen = HashSet::new();
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for msg in &out {
        let (meta, value) = decoded(msg);
        assert!(seen.insert(meta.id), "event {} twice: {} events for {} inputs", meta.id, out.len(), 10 * rounds);
        let cause: uuid::Uuid = meta.causation_id.as_deref().expect("causation").parse().expect("uuid");
        let (key, _) = inputs.get(&cause).expect("caused by an input");
        by_key.entry(key.clone()).or_default().push(value["n"].as_i64().unwrap_or_default());
    }
    assert_eq!(out.len(), 10 * rounds, "each input once");
    assert!(by_key.values().all(|ns| *ns == (1..=rounds as i64).collect::<Vec<_>>()), "{by_key:?}");
    running.stop().await;
    let committed = herald_testkit::committed(&s.config, &s.group, &s.input, 3).await;
    let total: i64 = committed.iter().map(|c| c.unwrap_or(0)).sum();
    assert_eq!(total, 10 * rounds as i64, "the input offsets committed with the reactions: {committed:?}");
}

/// Deadlines alone likewise. A transaction that only fired deadlines holds no input
/// offset, so the group's committed offsets cannot tell whether it landed; the record it
/// wrote to the changelog can. Taken as aborted, its deadlines fired again: each `Expired`
/// written twice (as a broker restart did to the shop's timeouts: `OrderCancelled` twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadlines_whose_commit_timed_out_but_landed_fire_once() {
    const KEYS: usize = 12;
    let s = setup(3).await;
    let clock = Arc::new(ManualClock::new(DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time")));
    let mut settings = s.settings("a");
    settings.commit_timeout = Duration::ZERO;
    let engine = s.engine(settings).with_clock(clock.clone());
    let health = engine.health();
    let running = start(engine);
    for k in 0..KEYS {
        s.ping(&format!("d{k}"), 60_000).await;
    }
    herald_testkit::wait_until(WAIT, "every ping reacted to, committed", || {
        let h = health.clone();
        async move { h.reactions() >= KEYS as u64 && h.open_transaction_age().is_none() }
    })
    .await;
    let before = health.commits_in_doubt();
    // Every deadline comes due at once: transactions of deadlines alone, each "timing out".
    clock.advance(Duration::from_secs(61));
    let out = read(&s.config, &s.output, "read_committed", 2 * KEYS, WAIT, Duration::from_secs(3)).await;
    running.stop().await;
    let mut expired: HashMap<String, usize> = HashMap::new();
    for msg in &out {
        if let serde_json::Value::String(id) = &decoded(msg).1["id"]
            && decoded(msg).1["type"] == "expired"
        {
            *expired.entry(id.clone()).or_default() += 1;
        }
    }
    assert!(expired.values().all(|n| *n == 1), "a deadline fired twice: {expired:?}");
    assert_eq!(expired.len(), KEYS, "{expired:?}");
    assert_eq!(out.len(), 2 * KEYS);
    assert!(health.commits_in_doubt() > before, "a deadline's commit landed after its timeout (else this test tried nothing)");
}

/// A broker that freezes (every call unanswered for 8 s, as in a long GC pause) while
/// inputs flow: transaction calls time out in every phase (sends, offsets, the commit,
/// the abort, the resolution of a commit whose outcome is unknown, the next producer's
/// `init_transactions`), and after it thaws each input's event is there exactly once.
///
/// Found that a lost revocation (the session expired during the freeze) let a commit
/// retried after the rejoin take the lost partitions' offsets under the new generation,
/// while the partitions, assigned again, were read from before them: an input's event
/// twice in 4 of 6 runs (fixed: lost partitions are given up on at once; the sink's unit
/// test checks that deterministically). Ignored in the suite: the frozen single-node
/// broker does not always come back in time (seen: a publisher's record timing out after
/// 300 s, a run hanging past 5 minutes; cause not found). Run it by hand:
/// `cargo test -p herald-choreography --test engine a_broker_frozen -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the frozen broker does not always come back in time; see the doc comment"]
async fn a_broker_frozen_mid_stream_loses_and_repeats_nothing() {
    const PINGS: usize = 400;
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    let broker = herald_testkit::PrivateBroker::new("engine-freeze");
    broker.run("start").await;
    let config = broker.config();
    let input = herald_testkit::topic(&config, "engine.in", 3).await;
    let output = herald_testkit::topic(&config, "engine.out", 3).await;
    let mut settings = EngineSettings::new("a");
    settings.group = Some(herald_testkit::unique("engine.group"));
    settings.changelog = Some(format!("{}.changelog", settings.group.clone().unwrap_or_default()));
    settings.consumer_properties.push(("session.timeout.ms".into(), "6000".into()));
    (settings.call_timeout, settings.commit_timeout) = (Duration::from_secs(2), Duration::from_secs(2));
    settings.transaction_timeout = Duration::from_secs(60);
    // A static member whose session expired meets its own rejoin as another member with
    // the same group.instance.id (FencedInstanceId: fatal in librdkafka, the engine ends).
    settings.static_membership = false;
    let engine = Engine::new(&config, Pinger { input: Topic::named(&input), output: Topic::named(&output) }, settings).expect("engine");
    let health = engine.health();
    let running = start(engine);
    let publisher = Publisher::new(&config, PublisherOptions::new("/test")).expect("publisher");
    let sending = tokio::spawn({
        let input = input.clone();
        async move {
            let topic: Topic<Ev> = Topic::named(&input);
            for i in 0..PINGS {
                let id = format!("p{i}");
                publisher.publish_with(&topic, &Ping { id: id.clone(), deadline_ms: 0 }, Metadata::new("t.Ping", "/test", &id)).await.expect("published");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    herald_testkit::wait_until(WAIT, "reactions committed before the freeze", || {
        let h = health.clone();
        async move { h.reactions() >= 50 }
    })
    .await;
    broker.freeze();
    tokio::time::sleep(Duration::from_secs(8)).await; // the fault's length, not a wait for a condition
    broker.thaw();
    sending.await.expect("every ping published");
    let count = |messages: &[OwnedMessage]| {
        let mut seen: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
        for msg in messages {
            seen.entry(decoded(msg).1["id"].as_str().unwrap_or_default().to_owned()).or_default().push((msg.partition(), msg.offset()));
        }
        seen
    };
    let inputs = count(&read(&config, &input, "read_uncommitted", PINGS, WAIT, Duration::from_secs(1)).await);
    let twice: Vec<_> = inputs.iter().filter(|(_, at)| at.len() > 1).collect();
    assert!(twice.is_empty(), "the publisher wrote inputs twice: {twice:?}");
    let out = read_until(&config, &output, "read_committed", PINGS, Duration::from_secs(180), Duration::from_secs(5)).await;
    running.stop().await;
    let seen = count(&out);
    let twice: Vec<_> = seen.iter().filter(|(_, at)| at.len() > 1).collect();
    let missing: Vec<_> = inputs.iter().filter(|(id, _)| !seen.contains_key(*id)).collect();
    let summary = format!("{} committed, {} aborted, {} rebuilt, {} in doubt found committed, last error {:?}", health.committed(), health.aborted(), health.rebuilt(), health.commits_in_doubt(), herald_ops::HealthCheck::check(&*health).1["last_error"]);
    assert!(twice.is_empty(), "events written twice (partition, offset): {twice:?}; {summary}");
    assert!(missing.is_empty(), "{} inputs without their event, e.g. {:?}; {summary}", missing.len(), missing.iter().take(5).collect::<Vec<_>>());
    assert!(health.aborted() + health.rebuilt() > 0, "the freeze failed no transaction (else this test tried nothing)");
    eprintln!("frozen broker: {summary}");
}

/// The repartition step's commits likewise: a copy whose commit timed out but landed is
/// not copied again (the repartition topic would hold it twice, and the participant react
/// to it twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repartition_commit_that_timed_out_but_landed_is_not_copied_again() {
    const ROUNDS: u64 = 6;
    let s = setup(3).await;
    let mut settings = s.settings("a");
    settings.commit_timeout = Duration::ZERO;
    let engine = Engine::new(&s.config, ByInitial { input: Topic::named(&s.input), output: Topic::named(&s.output) }, settings).expect("engine");
    let health = engine.health();
    let running = start(engine);
    let mut ids = Vec::new();
    for round in 0..ROUNDS {
        for k in 0..10 {
            let id = format!("{}{round}{k}", ["a", "b", "c", "d", "e"][k % 5]);
            s.ping(&id, 0).await;
            ids.push(id);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while health.reactions() < 10 * (round + 1) {
            assert!(tokio::time::Instant::now() < deadline, "round {round}: {} reactions committed", health.reactions());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let copies = read(&s.config, &format!("by-initial.{}.by-initial", s.input), "read_committed", ids.len(), WAIT, Duration::from_secs(3)).await;
    let copied: Vec<uuid::Uuid> = ids_of(&copies);
    assert_eq!(copied.iter().collect::<HashSet<_>>().len(), copied.len(), "an input copied twice: {} copies of {} inputs", copied.len(), ids.len());
    let out = read(&s.config, &s.output, "read_committed", ids.len(), WAIT, QUIET).await;
    running.stop().await;
    assert_eq!(ids_of(&out).iter().collect::<HashSet<_>>().len(), ids.len(), "{} outputs of {} inputs", out.len(), ids.len());
    let mut by_initial: HashMap<String, Vec<i64>> = HashMap::new();
    for msg in &out {
        let (_, value) = decoded(msg);
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        by_initial.entry(id[..1].to_owned()).or_default().push(value["n"].as_i64().unwrap_or_default());
    }
    for (initial, mut ns) in by_initial {
        ns.sort();
        assert_eq!(ns, (1..=2 * ROUNDS as i64).collect::<Vec<_>>(), "{initial}: each input counted once");
    }
}

/// A revocation the consumer stops waiting for (the coordinator was inside a slow
/// reaction past `call_timeout`) lets the rebalance go on, and the partitions get another
/// owner that reacts to their uncommitted inputs again. The old owner must then abort its
/// open transaction: it used to commit it with fresh group metadata, which the broker took
/// under the new generation (this member is still in the group), so the inputs' events
/// were written by both owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn a_revocation_given_up_on_aborts_the_open_transaction_instead_of_committing_it() {
    let s = setup(2).await;
    let settings = |instance: &str| {
        let mut settings = s.settings(instance);
        settings.call_timeout = Duration::from_secs(1);
        // Long enough that the slow reactions and the rebalance happen inside one open
        // transaction, which the broker does not time out meanwhile.
        settings.commit_interval = Duration::from_secs(15);
        settings.commit_when_idle = None;
        settings.transaction_timeout = Duration::from_secs(60);
        settings
    };
    let engine = |instance: &str| Engine::new(&s.config, Fragile { input: Topic::named(&s.input), output: Topic::named(&s.output) }, settings(instance)).expect("engine");
    let first = engine("a");
    let health = first.health();
    let a = start(first);
    s.ping("warm-up", 0).await;
    herald_testkit::wait_until(WAIT, "a warm-up reaction", || async { health.reactions() > 0 || health.open_transaction_age().is_some() }).await;
    // One slow input on each partition: the coordinator sleeps through the rebalance (10 s
    // in all, so B's start fits in it on a loaded machine too).
    let tag = herald_testkit::unique("slow");
    let keys: Vec<String> = (0..2).map(|p| (0..).map(|i| format!("{tag}-{i}")).find(|k| herald_bus::partitioner::partition_for(k.as_bytes(), 2) == p).expect("a key")).collect();
    for key in &keys {
        s.ping(key, 5_000).await;
    }
    // B joins while A sleeps in its first slow reaction (the second follows it).
    herald_testkit::wait_until(WAIT, "A began a slow reaction", || async { SLOW_STARTED.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|id| id.starts_with(&tag)) }).await;
    let b = start(engine("b"));
    let out = read(&s.config, &s.output, "read_committed", 3, Duration::from_secs(90), Duration::from_secs(12)).await;
    let ids: Vec<String> = out.iter().map(|m| decoded(m).1["id"].as_str().unwrap_or_default().to_owned()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an input's event written twice: {ids:?}");
    assert_eq!(unique.len(), 3, "{ids:?}");
    assert!(health.revocations_given_up() > 0, "the revocation was given up on while A reacted (else this test tried nothing)");
    a.stop().await;
    b.stop().await;
}
