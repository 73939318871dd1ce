//! How an engine runs: names, batching, timeouts.

use std::time::Duration;

/// The topic configs a changelog the engine creates gets by default: 16 MiB segments
/// (`segment.bytes`) and compaction once a tenth of the log is superseded
/// (`min.cleanable.dirty.ratio` 0.1). The broker's cleaner compacts closed segments only;
/// in the broker's default 1 GiB segments a changelog is in practice never compacted and
/// a restore reads every state ever written: a million commands on 1 000 aggregates left
/// 470 000 records (1 GB, restored in 2.1 s) where these settings leave 1 535 (3 MB,
/// 0.72 s; BENCHMARKS.md, "recovery").
///
/// ```
/// use herald_choreography::engine::{EngineSettings, CHANGELOG_CONFIGS};
/// let mut settings = EngineSettings::new("a-1");
/// assert_eq!(settings.changelog_configs.len(), CHANGELOG_CONFIGS.len());
/// settings.changelog_configs.push(("segment.bytes".into(), (64 << 20).to_string()));
/// ```
pub const CHANGELOG_CONFIGS: [(&str, &str); 2] = [("segment.bytes", "16777216"), ("min.cleanable.dirty.ratio", "0.1")];

/// Settings of an [`Engine`](super::Engine). [`EngineSettings::new`] gives the defaults;
/// the names (group, changelog, transactional id) derive from the participant's name and
/// the instance id unless set.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// This process among the participant's instances: the stable part of its
    /// `transactional.id` and its `group.instance.id` (static membership), so a restarted
    /// instance takes its work back at once and fences what its predecessor left open.
    pub instance: String,
    /// Consumer group (default: the participant's name).
    pub group: Option<String>,
    /// Changelog topic (default: [`Declaration::changelog_topic`](crate::declaration::Declaration::changelog_topic)).
    pub changelog: Option<String>,
    /// Commit the open transaction at most this long after it began (default 100 ms, as
    /// Kafka Streams under exactly-once).
    pub commit_interval: Duration,
    /// Commit as soon as the open transaction holds this many reactions (default 1000).
    pub max_batch: usize,
    /// Commit the open transaction once no input arrived for this long (default 5 ms),
    /// before `commit_interval`: an engine that is not busy shows a reaction (an
    /// aggregate's reply, a saga's next step) a few milliseconds after its input instead
    /// of at the end of the interval, and one whose inputs keep coming still commits every
    /// `commit_interval` or `max_batch`. The price is more, smaller transactions at low
    /// rates. `None`: only `commit_interval` and `max_batch`, as Kafka Streams.
    pub commit_when_idle: Option<Duration>,
    /// Exactly once (default true). False runs the same batches at least once, for
    /// comparison: no transaction; every `commit_interval` the producer is flushed, and
    /// only then are the batch's input offsets stored in the consumer (committed by
    /// librdkafka every `auto.commit.interval.ms`). A crash may then react to inputs again
    /// and emit their events twice, and readers see events before the batch completes.
    /// The changelog is written the same way, so after a crash it may already hold the
    /// state a reaction left while that reaction's input is reacted to again, on that
    /// state: a reaction that is not idempotent (a counter) may then count twice.
    /// Inputs that go through a repartition topic are still copied there exactly once.
    pub exactly_once: bool,
    /// Pipelined (default true; exactly once only): a partition hands over its next
    /// records as soon as its previous ones were reacted to in the open transaction,
    /// instead of once that transaction committed, so a transaction holds what arrives
    /// while it is open (up to `commit_interval`, `max_batch`, or a `commit_when_idle`
    /// pause), as Kafka Streams does.
    /// Nothing changes for readers: offsets still move only with the transaction, and an
    /// aborted transaction's inputs are reacted to again from memory. At shutdown, what is
    /// handed over after the last commit may be aborted instead (its next owner reacts to
    /// it).
    pub pipeline: bool,
    /// `transaction.timeout.ms`: the broker aborts a transaction left open this long
    /// (default 10 s). Keep it well above `commit_interval`.
    pub transaction_timeout: Duration,
    /// Limit of each blocking transaction call (default 30 s).
    pub call_timeout: Duration,
    /// How long the engine waits for `commit_transaction` (default 30 s; zero: not at all;
    /// the call itself goes on up to `call_timeout`). A commit that outlasts it has an unknown outcome:
    /// the engine rebuilds the producer and learns from a changelog record the transaction
    /// wrote whether it committed before going on (see [`outcome_unknown`](super::outcome_unknown)).
    pub commit_timeout: Duration,
    /// How often the deadline timer looks for due deadlines (default 50 ms).
    pub tick: Duration,
    /// Use static group membership (`group.instance.id` = instance; default true).
    pub static_membership: bool,
    /// Write a tombstone for a state key whose part finished with nothing pending, and
    /// forget it in memory (default false: the finished state stays, so late outcomes and
    /// duplicates still see it, also after a restart).
    pub forget_finished: bool,
    /// How the producers of the inputs keyed by their aggregate id place records
    /// (default murmur2, as the Java client and Herald). A record is decided only on the
    /// partition its aggregate id maps to: one on another partition (a producer with
    /// another partitioner, a record without a key, a partition chosen by hand) would be
    /// decided against another copy of its aggregate's state, a second writer of it; the
    /// engine dead-letters it, saying where it belongs, and so a record without a key (its
    /// partition is anyone's guess). Set
    /// [`Partitioner::Crc32`](herald_bus::partitioner::Partitioner) when every producer uses
    /// librdkafka's default (`consistent_random`: confluent-kafka's Python, Go and .NET
    /// clients, kcat); `None` decides each record where it landed. Left at murmur2, it
    /// follows the `partitioner` of the engine's [`KafkaConfig`](herald_bus::KafkaConfig),
    /// which Herald's own producers use.
    pub input_partitioner: Option<herald_bus::partitioner::Partitioner>,
    /// Create the changelog topic (compacted, as many partitions as the inputs) when it is
    /// missing (default true).
    pub create_changelog: bool,
    /// Create the dead-letter topic (`<topic>.dlq`, as many partitions as the inputs) of
    /// every topic the engine reads when it is missing (default true). Without it, a
    /// record the engine cannot take waits for its dead letter until the topic exists (the
    /// health check says so), on its own partition. A decode failure's letter is written
    /// by the consumer runtime; a reaction that panics or cannot be written is
    /// dead-lettered in the engine's transaction, which fails for a missing topic (after
    /// librdkafka's `topic.metadata.propagation.max.ms`, which the engine sets to half the
    /// transaction timeout unless given; every partition of the process waits meanwhile):
    /// the engine then hands that topic's
    /// letters back to their partitions' workers for a while, which write them once the
    /// topic exists. The same holds for a dead-letter topic the engine may not write to (an
    /// ACL), and one whose `max.message.bytes`, read at start, is below a letter: the
    /// worker parks that partition and reports it.
    pub create_dead_letter_topics: bool,
    /// Topic configs of a changelog the engine creates, beside `cleanup.policy=compact`
    /// (default [`CHANGELOG_CONFIGS`]; a later entry of the same name wins, as in
    /// [`TopicSpec::config`](herald_bus::admin::TopicSpec::config)).
    pub changelog_configs: Vec<(String, String)>,
    /// librdkafka properties for the input consumer, over Herald's.
    pub consumer_properties: Vec<(String, String)>,
    /// How long an owned input partition's last stable offset may stay below its high
    /// watermark without moving before the engine reports a transaction hanging on it
    /// (`/health` unhealthy with what an operator does, an error log; see `hanging`).
    /// Default 90 s: longer than the transaction timeout of the producers writing the
    /// inputs (librdkafka's default is 60 s, the engine's own 10 s), or a long live
    /// transaction is reported too.
    pub hanging_input_after: Duration,
    /// Prepended to every name the engine derives or uses (default empty): the topics it
    /// reads and writes (the participant's inputs and outputs as declared, its changelog
    /// and repartition topics), its consumer groups and transactional ids. Several copies
    /// of a saga then share one cluster without sharing anything else (tests running in
    /// parallel, a staging copy). Names set explicitly (`group`, `changelog`) are used as
    /// they are.
    pub topic_prefix: String,
    /// What becomes of an input record whose event type is not among its topic's family
    /// (a schema the participant knows that is no member, or an unknown schema whose
    /// `ce_type` names another type), as the bus [`Consumer`](herald_bus::Consumer)'s
    /// policy of the same name. Default [`UnknownTypes::DeadLetter`](herald_bus::UnknownTypes):
    /// dead-lettered at stage `unknown-type`, in the transaction that moves past it.
    /// [`UnknownTypes::Skip`](herald_bus::UnknownTypes): moved past in the transaction
    /// without a reaction or a dead letter, counted in
    /// `herald_choreography_inputs_skipped_total`; for a topic that also carries types the
    /// participant does not react to, or writers deployed before their readers. (An
    /// aggregate's command skipped so gets no reply: its sender times out.)
    pub unknown_types: herald_bus::UnknownTypes,
}

impl EngineSettings {
    /// Defaults for instance `instance`.
    pub fn new(instance: impl Into<String>) -> Self {
        EngineSettings {
            instance: instance.into(),
            group: None,
            changelog: None,
            commit_interval: Duration::from_millis(100),
            max_batch: 1000,
            commit_when_idle: Some(Duration::from_millis(5)),
            exactly_once: true,
            pipeline: true,
            transaction_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            commit_timeout: Duration::from_secs(30),
            tick: Duration::from_millis(50),
            static_membership: true,
            forget_finished: false,
            input_partitioner: Some(herald_bus::partitioner::Partitioner::Murmur2),
            create_changelog: true,
            create_dead_letter_topics: true,
            changelog_configs: CHANGELOG_CONFIGS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            consumer_properties: Vec::new(),
            hanging_input_after: Duration::from_secs(90),
            topic_prefix: String::new(),
            unknown_types: herald_bus::UnknownTypes::DeadLetter,
        }
    }

    /// `name` with the [`topic_prefix`](Self::topic_prefix).
    ///
    /// ```
    /// use herald_choreography::engine::EngineSettings;
    /// let settings = EngineSettings { topic_prefix: "t1.".into(), ..EngineSettings::new("a-1") };
    /// assert_eq!(settings.prefixed("shop.orders"), "t1.shop.orders");
    /// ```
    pub fn prefixed(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// The `transactional.id` of `participant`'s instance: `<group>.<instance>`, the group
    /// being `<topic_prefix><participant>` unless set.
    ///
    /// ```
    /// use herald_choreography::engine::EngineSettings;
    /// assert_eq!(EngineSettings::new("a-1").transactional_id("orders"), "orders.a-1");
    /// let prefixed = EngineSettings { topic_prefix: "t1.".into(), ..EngineSettings::new("a-1") };
    /// assert_eq!(prefixed.transactional_id("orders"), "t1.orders.a-1");
    /// ```
    pub fn transactional_id(&self, participant: &str) -> String {
        match &self.group {
            Some(group) => format!("{group}.{}", self.instance),
            None => format!("{}.{}", self.prefixed(participant), self.instance),
        }
    }
}
