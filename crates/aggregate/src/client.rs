//! [`CommandClient`]: send a command, await its reply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use herald_bus::codec::SingleObject;
use herald_bus::event::Member;
use herald_bus::publisher::Record;
use herald_bus::{Event, EventFamily, KafkaConfig, PublishError, Publisher, PublisherOptions, Topic};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::headers;
use crate::reply::{CommandReply, Replies};

/// How one command is sent ([`CommandClient::send_with`]).
///
/// ```
/// use std::time::Duration;
/// let options = herald_aggregate::SendOptions::default().expect_version(3).timeout(Duration::from_secs(2));
/// assert_eq!(options.expected_version, Some(3));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// The version the aggregate must be at, or the command is rejected with `conflict`.
    pub expected_version: Option<i64>,
    /// How long to wait for the reply (default: the client's, 10 s).
    pub timeout: Option<Duration>,
    /// The command's id (default: a new UUIDv7). Sending a command again with the id it
    /// had (after a timeout) gets the reply it got the first time, without deciding it
    /// again, as long as the aggregate still remembers it
    /// ([`Aggregate::REMEMBERED`](crate::Aggregate::REMEMBERED) recent commands).
    pub command_id: Option<Uuid>,
}

impl SendOptions {
    /// Expects the aggregate at `version`.
    pub fn expect_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Waits at most `timeout` for the reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends with id `id` (to send a command again).
    pub fn command_id(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }
}

/// Sending a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No reply in time (or the broker did not acknowledge the command in time): the
    /// command may have been decided or not. Find out with
    /// [`CommandClient::find_reply`] by its id, or send it again with the same id
    /// ([`SendOptions::command_id`]) to get its reply.
    #[error("no reply to command {command_id} within {waited:?}: its outcome is unknown; look it up by the command id (its reply on {reply_topic} is keyed by it) or send it again with the same id")]
    Timeout {
        /// The command's id.
        command_id: Uuid,
        /// How long the client waited.
        waited: Duration,
        /// Where its reply will be.
        reply_topic: String,
    },
    /// The command was not published. When [`PublishError::possibly_persisted`], it may
    /// have been written anyway: the outcome is unknown, as for a timeout.
    #[error("command {command_id} not sent: {source}")]
    Publish {
        /// The command's id.
        command_id: Uuid,
        /// The publisher's error.
        #[source]
        source: PublishError,
    },
    /// The client's reply reader stopped (its consumer failed); see the log.
    #[error("the reply reader stopped; command {command_id} has an unknown outcome")]
    Closed {
        /// The command's id.
        command_id: Uuid,
    },
}

impl SendError {
    /// The id of the command concerned.
    pub fn command_id(&self) -> Uuid {
        match self {
            SendError::Timeout { command_id, .. } | SendError::Publish { command_id, .. } | SendError::Closed { command_id } => *command_id,
        }
    }

    /// Whether the command may have been decided (so look it up before sending anything else).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            SendError::Publish { source, .. } => source.possibly_persisted(),
            _ => true,
        }
    }
}

/// Creating a client or looking up a reply failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The publisher could not be created.
    #[error("publisher: {0}")]
    Publisher(#[from] PublishError),
    /// The reply topic does not exist (create it first: a transaction cannot write a reply
    /// to a missing topic).
    #[error("reply topic {0} does not exist")]
    NoReplyTopic(String),
    /// A Kafka client call failed.
    #[error("{0}")]
    Kafka(String),
}

/// The sends waiting for a reply, by command id: several when a command is sent again
/// with its id (a caller's retry) while an earlier send still waits; each gets the reply.
type Pending = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<CommandReply>>>>>;

/// A send's place among the pending replies, given up however the send ends: answered,
/// failed, timed out, or its future dropped (before, a dropped `send` left its entry for
/// the life of the client). Declared before the receiver, so it drops after it: only
/// senders whose receivers are gone (this send's) go, not another send's with the same id.
struct Waiting<'a> {
    pending: &'a Pending,
    key: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waiters) = pending.get_mut(&self.key) {
            waiters.retain(|waiter| !waiter.is_closed());
            if waiters.is_empty() {
                pending.remove(&self.key);
            }
        }
    }
}

/// Sends commands of family `C` and awaits their replies.
///
/// Replies are read from `reply_topic` (every partition, read_committed, from the end as it
/// was when the client was created; partitions added to the topic later are read from
/// their start within [`NEW_PARTITIONS_CHECK`]) and matched to the waiting sends by
/// command id, so any number of sends may wait at once, and several clients may share a
/// reply topic.
/// Cloning is cheap (one publisher and one reader shared).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # herald_bus::family! { #[derive(Debug)] pub enum Cmd { Deposit(Deposit) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Deposit { account_id: String, amount_cents: i64 }
/// # impl herald_bus::Event for Deposit { const TYPE: &'static str = "x.Deposit"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.account_id } }
/// const COMMANDS: herald_bus::Topic<Cmd> = herald_bus::Topic::new("x.commands");
/// let config = herald_bus::KafkaConfig::new("127.0.0.1:9092");
/// let client = herald_aggregate::CommandClient::new(&config, COMMANDS, "x.replies").await?;
/// match client.send(Deposit { account_id: "a-1".into(), amount_cents: 500 }).await {
///     Ok(reply) if reply.is_accepted() => println!("at version {:?}", reply.version),
///     Ok(reply) => println!("rejected: {:?}", reply.reason),
///     Err(e) => println!("{e}; command id {}", e.command_id()),
/// }
/// # Ok(()) }
/// ```
pub struct CommandClient<C> {
    publisher: Publisher,
    commands: Topic<C>,
    reply_topic: String,
    config: KafkaConfig,
    pending: Pending,
    reader: Arc<ReaderTask>,
    timeout: Duration,
}

impl<C> Clone for CommandClient<C> {
    fn clone(&self) -> Self {
        CommandClient {
            publisher: self.publisher.clone(),
            commands: Topic::named(self.commands.name()),
            reply_topic: self.reply_topic.clone(),
            config: self.config.clone(),
            pending: self.pending.clone(),
            reader: self.reader.clone(),
            timeout: self.timeout,
        }
    }
}

/// The reply reader's tasks (the reading, the check for new partitions), stopped when the
/// last client clone drops.
struct ReaderTask([tokio::task::JoinHandle<()>; 2]);

impl Drop for ReaderTask {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// How often a [`CommandClient`] looks for partitions added to its reply topic.
pub const NEW_PARTITIONS_CHECK: Duration = Duration::from_secs(5);

/// Assigns `consumer` the partitions of `topic` it does not read yet, from their start
/// (they were added after it began: every record in them is newer). Before, replies the
/// engine wrote to a partition added to the reply topic were never read, and their sends
/// timed out.
/// Asks the consumer's own connection (no client per check); blocks for up to 5 s. An
/// unanswered check gives the client its bootstrap servers back (`bootstrap`): librdkafka
/// can leave a client with no broker after one was fenced for a moment, and every send
/// then timed out for want of its reply ([`herald_bus::rebootstrap`]).
fn read_new_partitions(consumer: &Reader, topic: &str) {
    let Ok(metadata) = herald_bus::rebootstrap::check(consumer.client(), topic, Duration::from_secs(5)) else { return };
    let Some(count) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()).map(|t| t.partitions().len()) else { return };
    let Ok(assigned) = consumer.assignment() else { return };
    let mut added = TopicPartitionList::new();
    for partition in 0..count as i32 {
        if assigned.find_partition(topic, partition).is_none() && added.add_partition_offset(topic, partition, Offset::Beginning).is_err() {
            return;
        }
    }
    if added.count() > 0 {
        match consumer.incremental_assign(&added) {
            Ok(()) => tracing::info!(topic, partitions = count, "reading the reply topic's new partitions"),
            Err(e) => tracing::warn!(topic, error = %e, "new partitions of the reply topic not assigned: trying again"),
        }
    }
}

/// A consumer of every partition of `topic`, from the start (a lookup: it reports each
/// partition's end, as `PartitionEOF`) or from the current end (the client's reply reader).
/// Returns it with the topic's partition count.
/// Where a [`reader_of`] starts in each partition.
#[derive(Clone, Copy)]
enum ReadFrom {
    /// The beginning (and it reports each partition's end).
    Start,
    /// The end as it is now.
    End,
    /// The first record at or after this time, in milliseconds since the epoch (and it
    /// reports each partition's end).
    Time(i64),
}

/// A reader of every partition of `topic`, by assignment from `from`, and how many
/// partitions it reads.
/// The client's readers of reply topics: reaching a partition's end, which they ask for,
/// is not logged as an error (`herald command` printed six ERROR lines before its answer).
type Reader = StreamConsumer<crate::fetch::Quiet>;

async fn reader_of(config: &KafkaConfig, topic: &str, from: ReadFrom) -> Result<(Reader, usize), ClientError> {
    let partitions = herald_bus::admin::partition_count(config, topic).await.map_err(|e| ClientError::Kafka(e.to_string()))?.ok_or_else(|| ClientError::NoReplyTopic(topic.to_owned()))?;
    let group = format!("herald-aggregate-client-{}", Uuid::now_v7());
    let eof = if matches!(from, ReadFrom::End) { "false" } else { "true" };
    let consumer: Reader = config
        .client_config(&[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "20"),
            ("enable.partition.eof", eof),
        ])
        .create_with_context(crate::fetch::Quiet)
        .map_err(|e| ClientError::Kafka(e.to_string()))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let offset = if let ReadFrom::Start | ReadFrom::Time(_) = from {
            Offset::Beginning
        } else {
            // The end as it is now: replies to commands sent from now on come after it.
            // A topic just created may have no leader yet for a moment: tried for 15 s.
            let deadline = Instant::now() + Duration::from_secs(15);
            let high = loop {
                match tokio::task::block_in_place(|| consumer.fetch_watermarks(topic, p, Duration::from_secs(5))) {
                    Ok((_, high)) => break high,
                    Err(e) if Instant::now() >= deadline => return Err(ClientError::Kafka(format!("watermarks of {topic}/{p}: {e}"))),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            Offset::Offset(high)
        };
        tpl.add_partition_offset(topic, p, offset).map_err(|e| ClientError::Kafka(e.to_string()))?;
    }
    if let ReadFrom::Time(ms) = from {
        // Each partition's first offset at or after `ms`; its end when it has none (a
        // reader then sees only its end).
        let mut times = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            times.add_partition_offset(topic, p, Offset::Offset(ms)).map_err(|e| ClientError::Kafka(e.to_string()))?;
        }
        tpl = tokio::task::block_in_place(|| consumer.offsets_for_times(times, Duration::from_secs(10))).map_err(|e| ClientError::Kafka(format!("offsets of {topic} by time: {e}")))?;
    }
    consumer.assign(&tpl).map_err(|e| ClientError::Kafka(e.to_string()))?;
    Ok((consumer, partitions))
}

/// The reply in a record of a reply topic, if it is one.
fn decode_reply(codec: &SingleObject, payload: Option<&[u8]>) -> Option<CommandReply> {
    let (writer, datum) = codec.split(payload?).ok()?;
    match Replies::decode(&writer.name, &writer, datum) {
        Ok(Some(Replies::Reply(reply))) => Some(reply),
        _ => None,
    }
}

impl<C> CommandClient<C> {
    /// A client sending to `commands` (as named: add any prefix yourself) and reading
    /// replies from `reply_topic`, which must exist. Needs tokio's multi-threaded runtime.
    pub async fn new(config: &KafkaConfig, commands: Topic<C>, reply_topic: impl Into<String>) -> Result<Self, ClientError> {
        let reply_topic = reply_topic.into();
        let publisher = Publisher::new(config, PublisherOptions::new("/herald/command-client"))?;
        let (consumer, _) = reader_of(config, &reply_topic, ReadFrom::End).await?;
        let consumer = Arc::new(consumer);
        let pending: Pending = Arc::default();
        let dispatch = pending.clone();
        // Partitions added to the reply topic are looked for beside the reading, on a
        // blocking thread: a metadata request that takes its time (up to 5 s) holds back
        // no reply, and no tokio worker.
        let checker = {
            let (consumer, topic) = (consumer.clone(), reply_topic.clone());
            tokio::spawn(async move {
                let mut check = tokio::time::interval(NEW_PARTITIONS_CHECK);
                check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    check.tick().await;
                    let (consumer, topic) = (consumer.clone(), topic.clone());
                    let _ = tokio::task::spawn_blocking(move || read_new_partitions(&consumer, &topic)).await;
                }
            })
        };
        let reader = tokio::spawn(async move {
            let codec = SingleObject::new(Replies::schemas().clone());
            loop {
                match consumer.recv().await {
                    Ok(msg) => {
                        let Some(reply) = decode_reply(&codec, msg.payload()) else { continue };
                        let waiters = dispatch.lock().unwrap_or_else(|p| p.into_inner()).remove(&reply.command_id);
                        for waiter in waiters.unwrap_or_default() {
                            let _ = waiter.send(reply.clone());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reply reader");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(CommandClient { publisher, commands, reply_topic, config: config.clone(), pending, reader: Arc::new(ReaderTask([reader, checker])), timeout: Duration::from_secs(10) })
    }

    /// The default reply timeout becomes `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The reply topic.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// Sends waiting for their replies now.
    pub fn waiting(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }

    /// Sends a command already encoded and framed (a tool that maps JSON through a schema,
    /// like `herald command`): `record`'s headers must carry `ce_id` = `command_id`; the
    /// reply-to and expected-version headers are added here. Then as [`CommandClient::send_with`]
    /// (`options.command_id` is ignored: the record has its id).
    pub async fn send_record(&self, mut record: Record, command_id: Uuid, options: SendOptions) -> Result<CommandReply, SendError> {
        let started = Instant::now();
        let key = command_id.to_string();
        let _waiting = Waiting { pending: &self.pending, key: key.clone() };
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().push(tx);
        record.headers = record.headers.insert(Header { key: headers::REPLY_TO, value: Some(self.reply_topic.as_str()) });
        if let Some(v) = options.expected_version {
            record.headers = record.headers.insert(Header { key: headers::EXPECTED_VERSION, value: Some(v.to_string().as_str()) });
        }
        let timeout = options.timeout.unwrap_or(self.timeout);
        // The publish counts against the timeout too: unbounded, it waited for the broker's
        // acknowledgement up to the producer's `message.timeout.ms` (minutes) while the
        // broker was away. A record not acknowledged in time may still be written (it
        // stays queued in the producer): its outcome is unknown, as without a reply.
        match tokio::time::timeout(timeout, self.publisher.send_record(record)).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => return Err(SendError::Publish { command_id, source }),
            Err(_) => return Err(SendError::Timeout { command_id, waited: started.elapsed(), reply_topic: self.reply_topic.clone() }),
        }
        match tokio::time::timeout(timeout.saturating_sub(started.elapsed()), rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(SendError::Closed { command_id }),
            Err(_) => Err(SendError::Timeout { command_id, waited: started.elapsed(), reply_topic: self.reply_topic.clone() }),
        }
    }

    /// Looks up the reply to `command_id` on the reply topic (every partition, from the
    /// beginning, read_committed). Returns `None` when none is there: the command was not
    /// decided yet, or its transaction is still open (or it never will be: it was not
    /// written). Reads until it finds the reply, or every partition was read to its end
    /// (its last stable offset: committed replies only), or `within` passed.
    pub async fn find_reply(&self, command_id: Uuid, within: Duration) -> Result<Option<CommandReply>, ClientError> {
        find_reply(&self.config, &self.reply_topic, command_id, within).await
    }
}

impl<C: EventFamily> CommandClient<C> {
    /// Sends `command` with a new id and waits for its reply (accepted or rejected), or
    /// fails with [`SendError::Timeout`] after the client's timeout. Cancel-safe in the
    /// sense that dropping the future only stops the wait: a command already published is
    /// still decided.
    pub async fn send<E>(&self, command: E) -> Result<CommandReply, SendError>
    where
        C: Member<E>,
        E: Event,
    {
        self.send_with(command, SendOptions::default()).await
    }

    /// [`CommandClient::send`] with [`SendOptions`].
    pub async fn send_with<E>(&self, command: E, options: SendOptions) -> Result<CommandReply, SendError>
    where
        C: Member<E>,
        E: Event,
    {
        let mut meta = self.publisher.metadata_for(&command);
        if let Some(id) = options.command_id {
            meta.id = id;
            meta.correlation_id = Some(id.to_string());
        }
        let command_id = meta.id;
        let record = self.publisher.encode(&self.commands, &command, &meta).await.map_err(|source| SendError::Publish { command_id, source })?;
        self.send_record(record, command_id, options).await
    }
}

/// [`CommandClient::find_reply`] without a client.
pub async fn find_reply(config: &KafkaConfig, reply_topic: &str, command_id: Uuid, within: Duration) -> Result<Option<CommandReply>, ClientError> {
    let (consumer, partitions) = reader_of(config, reply_topic, ReadFrom::Start).await?;
    let codec = SingleObject::new(Replies::schemas().clone());
    let wanted = command_id.to_string();
    scan(&consumer, partitions, within, |msg| if msg.key() == Some(wanted.as_bytes()) { decode_reply(&codec, msg.payload()) } else { None }).await
}

/// The first record of `consumer`'s partitions (`partitions` of them, read by a
/// [`reader_of`] that reports their ends) that `found` maps to a value; `None` once every
/// partition was read to its end (read_committed: its last stable offset, past its commit
/// markers; a quiet spell proves nothing: a slow first fetch, a long topic; a record in a
/// transaction still open is past that end: not there yet), or after `within`.
async fn scan<T>(consumer: &Reader, partitions: usize, within: Duration, mut found: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Option<T>) -> Result<Option<T>, ClientError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut ended = std::collections::HashSet::new();
    loop {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(msg)) => {
                if let Some(value) = found(&msg) {
                    return Ok(Some(value));
                }
            }
            Ok(Err(KafkaError::PartitionEOF(partition))) => {
                ended.insert(partition);
                if ended.len() >= partitions {
                    return Ok(None);
                }
            }
            Ok(Err(e)) => return Err(ClientError::Kafka(e.to_string())),
            Err(_) => return Ok(None),
        }
    }
}

/// A command the aggregate's engine dead-lettered instead of deciding it (one it cannot
/// decode, whose key is not its aggregate id, of a type the aggregate does not take): it
/// never gets a reply. Found by [`find_dead_letter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLettered {
    /// Why (`herald.dlq.reason`).
    pub reason: String,
    /// The dead-letter topic (`<command topic>.dlq`).
    pub topic: String,
    /// Where the dead letter is.
    pub partition: i32,
    /// Where the dead letter is.
    pub offset: i64,
}

/// The dead letter of command `command_id` sent on `commands` (in `<commands>.dlq`, which
/// the engine writes), looked for among the dead letters written since `since`, or `None`
/// when there is none (or no such topic) once every partition was read to its end, or
/// after `within`. What to ask after [`SendError::Timeout`]: a command that was
/// dead-lettered will never be decided.
///
/// ```no_run
/// # async fn run(config: herald_bus::KafkaConfig, id: uuid::Uuid) -> Result<(), herald_aggregate::ClientError> {
/// use std::time::{Duration, SystemTime};
/// let since = SystemTime::now() - Duration::from_secs(60);
/// if let Some(letter) = herald_aggregate::client::find_dead_letter(&config, "shop.accounts.commands", id, since, Duration::from_secs(10)).await? {
///     eprintln!("never decided: {}", letter.reason);
/// }
/// # Ok(()) }
/// ```
pub async fn find_dead_letter(config: &KafkaConfig, commands: &str, command_id: Uuid, since: SystemTime, within: Duration) -> Result<Option<DeadLettered>, ClientError> {
    let topic = format!("{commands}.dlq");
    if herald_bus::admin::partition_count(config, &topic).await.map_err(|e| ClientError::Kafka(e.to_string()))?.is_none() {
        return Ok(None);
    }
    let since_ms = since.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (consumer, partitions) = reader_of(config, &topic, ReadFrom::Time(since_ms)).await?;
    let wanted = command_id.to_string();
    let header = |msg: &rdkafka::message::BorrowedMessage<'_>, name: &str| {
        msg.headers().into_iter().flat_map(herald_bus::headers::pairs).find(|(n, _)| *n == name.as_bytes()).and_then(|(_, v)| v).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    scan(&consumer, partitions, within, |msg| {
        (header(msg, herald_bus::envelope::header::ID).as_deref() == Some(wanted.as_str())).then(|| {
            let reason = header(msg, herald_bus::dead_letter::header::REASON).unwrap_or_default();
            DeadLettered { reason, topic: topic.clone(), partition: msg.partition(), offset: msg.offset() }
        })
    })
    .await
}
