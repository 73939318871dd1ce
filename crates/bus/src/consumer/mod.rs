//! The consumer runtime: typed handlers over a consumer group, at least once, in order per
//! key.
//!
//! # How a record flows
//! 1. The main loop receives records from one rdkafka queue (never blocked by handlers: it
//!    keeps polling, so a slow handler cannot push the consumer out of its group).
//! 2. Each record goes to its partition's worker through a queue, in batches: after each
//!    record the loop takes whatever else the client has ready (up to 512 records),
//!    then hands each partition its records at once. Queues are bounded in
//!    bytes: when a partition holds more than a quarter of `max_buffered_bytes`, or all
//!    partitions together more than all of it, that partition is paused in the client
//!    (the main loop keeps polling), and resumed once its queue is down to half of its
//!    share and the total to three quarters. Pausing makes librdkafka drop what it
//!    prefetched for the partition, so the budget is large enough that it is rare.
//! 3. The worker decodes the record, calls the handler with retries, dead-letters what
//!    cannot be handled, and only then stores the offset.
//! 4. librdkafka commits stored offsets every `auto.commit.interval.ms`; revocation and
//!    shutdown commit synchronously.
//!
//! # Shutdown
//! [`Consumer::run`] takes a shutdown future. When it completes: intake stops, workers
//! finish the records already queued (up to `drain_timeout`, then they stop after their
//! current record), stored offsets are committed, the dead-letter producer is flushed, and
//! the consumer leaves its group.

mod context;
mod handler;
mod partition;
mod record;
mod retry;
mod route;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::TopicPartitionList;

pub use context::ConsumerHealth;
pub use handler::{Handler, HandlerError};
pub use retry::RetryPolicy;
pub use route::{decode, decode_record, UnknownTypes};

use context::{Context, Shared};
use partition::{DeadLetters, Worker};
pub use record::OwnedRecord;
use record::{Buffers, Recycler};
use route::{Route, RouteSettings, TypedRoute};

use crate::admin::{self, TopicSpec};
use crate::codec::{Codec, SingleObject};
use crate::schema::SchemaSet;
use crate::{EventFamily, KafkaConfig, PublishError, Publisher, PublisherOptions, Topic};

/// Consumer properties Herald sets unless the configuration overrides them.
///
/// `enable.auto.offset.store=false` and `enable.auto.commit=true` are not negotiable:
/// Herald stores offsets itself after the work is done and lets librdkafka commit what
/// was stored (every `auto.commit.interval.ms`, and on revocation); both are forced even
/// if the configuration says otherwise.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.commit.interval.ms", "1000"),
    ("auto.offset.reset", "earliest"),
    ("isolation.level", "read_committed"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("queued.max.messages.kbytes", "16384"),
    ("enable.partition.eof", "false"),
    // A resumed partition waits for the fetch in flight; librdkafka's 500 ms default makes
    // every pause cost half a second.
    ("fetch.wait.max.ms", "100"),
    // With a full prefetch queue librdkafka waits this long before fetching again; its
    // 1 s default stalls a consumer that catches up. The queue itself stays bounded.
    ("fetch.queue.backoff.ms", "10"),
];

/// Most records taken from the client before they are handed to the workers.
const MAX_BATCH: usize = 512;

/// A consumer could not start or failed while running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// No handler was subscribed.
    #[error("no topic subscribed")]
    NothingSubscribed,
    /// The rdkafka consumer could not be created or subscribed.
    #[error("kafka client error: {0}")]
    Client(#[from] KafkaError),
    /// The dead-letter producer could not be created.
    #[error("dead-letter producer: {0}")]
    Publisher(#[from] PublishError),
    /// A dead-letter topic could not be created.
    #[error("dead-letter topic: {0}")]
    Admin(#[from] admin::AdminError),
}

type RouteFactory = Box<dyn FnOnce(&RouteSettings) -> Arc<dyn Route> + Send>;

/// Builds a topic's codec from the schemas its consumer knows (see
/// [`ConsumerBuilder::codec`]).
pub type CodecFactory = Box<dyn Fn(SchemaSet) -> Arc<dyn Codec> + Send + Sync>;

/// Builds a [`Consumer`]: subscribe typed handlers to typed topics, tune, then build.
///
/// ```no_run
/// # herald_bus::family! { #[derive(Debug)] pub enum Demo { A(A) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct A { id: String }
/// # impl herald_bus::Event for A { const TYPE: &'static str = "A"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
/// # async fn run() -> Result<(), herald_bus::ConsumerError> {
/// use herald_bus::{Consumer, Envelope, HandlerError, KafkaConfig, Topic};
/// const DEMO: Topic<Demo> = Topic::new("demo.events");
///
/// let consumer = Consumer::builder(KafkaConfig::new("127.0.0.1:9092"), "demo-group")
///     .subscribe(&DEMO, |event: Envelope<Demo>| async move {
///         println!("{:?}", event.event);
///         Ok::<_, HandlerError>(())
///     })
///     .build()
///     .await?;
/// consumer.run(async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct ConsumerBuilder {
    config: KafkaConfig,
    group: String,
    routes: Vec<(String, SchemaSet, RouteFactory)>,
    schemas: SchemaSet,
    retry: RetryPolicy,
    handler_timeout: Duration,
    unknown_types: UnknownTypes,
    max_buffered_bytes: usize,
    drain_timeout: Duration,
    revoke_timeout: Duration,
    create_dead_letter_topics: bool,
    codec: CodecFactory,
}

impl ConsumerBuilder {
    /// Subscribes `handler` to `topic`. The handler's family must be the topic's: a
    /// mismatch does not compile.
    pub fn subscribe<F: EventFamily, H: Handler<F>>(mut self, topic: &Topic<F>, handler: H) -> Self {
        let factory: RouteFactory = Box::new(move |settings| Arc::new(TypedRoute::<F, H>::new(handler, settings.clone())));
        self.routes.push((topic.name().to_owned(), F::schemas().clone(), factory));
        self
    }

    /// Extra writer schemas to accept (older or newer versions of the members' types).
    pub fn schemas(mut self, schemas: SchemaSet) -> Self {
        self.schemas.extend(&schemas);
        self
    }

    /// Retry policy for failing handlers (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Deadline of one handler call (default 60 s; keep it well below
    /// `max.poll.interval.ms`).
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Policy for records of types the topic's family lacks (default: dead-letter).
    pub fn unknown_types(mut self, policy: UnknownTypes) -> Self {
        self.unknown_types = policy;
        self
    }

    /// Bytes of records buffered ahead of the handlers, across all partitions (default
    /// 64 MiB); one partition may hold a quarter of it. With librdkafka's
    /// `queued.max.messages.kbytes` (16 MiB by default here) this bounds the consumer's
    /// memory.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes.max(4096);
        self
    }

    /// How long shutdown waits for queued records to be handled (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long a revocation waits for the revoked partitions' current records (default
    /// 10 s). It runs inside the rebalance, so keep it short.
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// How payloads are framed. The function gets the schemas known for a topic (its
    /// family's plus [`ConsumerBuilder::schemas`]) and returns the codec that reads it. The
    /// default is [`SingleObject`]; a registry codec, or one that tells formats apart by
    /// their magic byte, plugs in here.
    pub fn codec(mut self, factory: impl Fn(SchemaSet) -> Arc<dyn Codec> + Send + Sync + 'static) -> Self {
        self.codec = Box::new(factory);
        self
    }

    /// Whether [`ConsumerBuilder::build`] creates missing dead-letter topics (default true).
    pub fn create_dead_letter_topics(mut self, create: bool) -> Self {
        self.create_dead_letter_topics = create;
        self
    }

    /// Creates the consumer, its dead-letter producer and topics, and subscribes.
    ///
    /// The consumer needs tokio's multi-threaded runtime: rebalance hooks wait for workers
    /// running on other threads.
    pub async fn build(self) -> Result<Consumer, ConsumerError> {
        if self.routes.is_empty() {
            return Err(ConsumerError::NothingSubscribed);
        }
        if self.create_dead_letter_topics {
            let mut specs = Vec::new();
            for (topic, _, _) in &self.routes {
                let partitions = admin::partition_count(&self.config, topic).await?.unwrap_or(1);
                specs.push(TopicSpec::new(crate::dead_letter::topic_for(topic)).partitions(partitions as i32));
            }
            admin::create_topics(&self.config, &specs).await?;
        }
        let health = Arc::new(ConsumerHealth::default());
        let shared = Arc::new(Shared {
            partitions: Default::default(),
            closing: Default::default(),
            revoke_timeout: self.revoke_timeout,
            health: health.clone(),
        });
        let mut client_config = self.config.client_config(CONSUMER_DEFAULTS);
        // Not negotiable: Herald stores offsets itself after the work, and relies on
        // librdkafka's auto-commit to commit them periodically and on revocation.
        client_config.set("group.id", &self.group).set("enable.auto.offset.store", "false").set("enable.auto.commit", "true");
        let consumer = StreamConsumer::from_config_and_context(&client_config, Context { shared: shared.clone() })?;
        let topics: Vec<&str> = self.routes.iter().map(|(t, _, _)| t.as_str()).collect();
        consumer.subscribe(&topics)?;

        let mut routes = HashMap::new();
        for (topic, family_schemas, factory) in self.routes {
            let mut schemas = family_schemas;
            schemas.extend(&self.schemas);
            let codec = (self.codec)(schemas);
            let settings = RouteSettings { topic: topic.clone(), retry: self.retry, handler_timeout: self.handler_timeout, unknown_types: self.unknown_types, codec };
            routes.insert(Arc::from(topic), factory(&settings));
        }
        let publisher = Publisher::new(&self.config, PublisherOptions::new(format!("herald:{}", self.group)))?;
        Ok(Consumer {
            consumer: Arc::new(consumer),
            shared,
            routes,
            dead_letters: DeadLetters { publisher, group: self.group },
            buffered: Arc::new(AtomicUsize::new(0)),
            recycler: Arc::default(),
            max_buffered_bytes: self.max_buffered_bytes,
            drain_timeout: self.drain_timeout,
            health,
        })
    }
}

/// A running consumer group member. See the [module docs](self) for the flow.
pub struct Consumer {
    consumer: Arc<StreamConsumer<Context>>,
    shared: Arc<Shared>,
    /// Routes by topic; the key is shared with every record of the topic.
    routes: HashMap<Arc<str>, Arc<dyn Route>>,
    dead_letters: DeadLetters,
    /// Bytes queued for all workers.
    buffered: Arc<AtomicUsize>,
    /// Buffers of finished records, for the next ones.
    recycler: Arc<Recycler>,
    max_buffered_bytes: usize,
    drain_timeout: Duration,
    health: Arc<ConsumerHealth>,
}

impl Consumer {
    /// Starts building a consumer in consumer group `group`.
    pub fn builder(config: KafkaConfig, group: impl Into<String>) -> ConsumerBuilder {
        ConsumerBuilder {
            config,
            group: group.into(),
            routes: Vec::new(),
            schemas: SchemaSet::default(),
            retry: RetryPolicy::default(),
            handler_timeout: Duration::from_secs(60),
            unknown_types: UnknownTypes::default(),
            max_buffered_bytes: 64 << 20,
            drain_timeout: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
            create_dead_letter_topics: true,
            codec: Box::new(|schemas| Arc::new(SingleObject::new(schemas))),
        }
    }

    /// Live state for health checks.
    pub fn health(&self) -> Arc<ConsumerHealth> {
        self.health.clone()
    }

    /// Consumes until `shutdown` completes, then shuts down in order (see the module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        self.health.set_running(true);
        tokio::pin!(shutdown);
        let mut refill = tokio::time::interval(Duration::from_millis(5));
        refill.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut any_paused = false;
        // Buffers for the next records, reused from records the workers finished.
        let mut spare = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                received = self.consumer.recv() => {
                    let wanted = MAX_BATCH.saturating_sub(spare.len());
                    if wanted > 0 {
                        self.recycler.take(&mut spare, wanted);
                    }
                    any_paused |= self.receive(received, &mut spare);
                    // Take what else is ready without waiting, then wake each worker once.
                    for _ in 1..MAX_BATCH {
                        match self.consumer.recv().now_or_never() {
                            Some(received) => any_paused |= self.receive(received, &mut spare),
                            None => break,
                        }
                    }
                    self.hand_off();
                }
                _ = refill.tick(), if any_paused => any_paused = self.refill(),
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Takes one result of the client. Returns true if a partition is paused.
    fn receive(&self, received: Result<BorrowedMessage<'_>, KafkaError>, spare: &mut Vec<Buffers>) -> bool {
        match received {
            Ok(msg) => self.dispatch(&msg, spare.pop().unwrap_or_default()),
            Err(KafkaError::PartitionEOF(_)) => false,
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                self.health.record_error(e.to_string());
                false
            }
        }
    }

    /// Sends each worker the records received for it since the last hand-off.
    fn hand_off(&self) {
        let mut partitions = self.shared.lock();
        for slot in partitions.values_mut().flat_map(HashMap::values_mut) {
            if slot.pending.is_empty() {
                continue;
            }
            let batch = std::mem::replace(&mut slot.pending, self.recycler.batch());
            if let Err(returned) = slot.tx.send(batch) {
                // The worker is gone (it stops only when revoked or shut down): give the bytes back.
                let size: usize = returned.0.iter().map(OwnedRecord::footprint).sum();
                slot.bytes.fetch_sub(size, Ordering::AcqRel);
                self.buffered.fetch_sub(size, Ordering::AcqRel);
            }
        }
    }

    /// Queues a record for its partition's worker (sent by [`Consumer::hand_off`]), copied
    /// into `buffers`. Returns true if the partition is paused.
    fn dispatch(&self, msg: &BorrowedMessage<'_>, buffers: Buffers) -> bool {
        let topic = msg.topic();
        let Some((topic_name, route)) = self.routes.get_key_value(topic) else {
            tracing::error!(topic, "record from a topic without route");
            return false;
        };
        let (partition, offset) = (msg.partition(), msg.offset());
        let mut partitions = self.shared.lock();
        let topic_slots = match partitions.get_mut(topic) {
            Some(slots) => slots,
            None => partitions.entry(topic.to_owned()).or_default(),
        };
        let slot = topic_slots.entry(partition).or_insert_with(|| {
            let worker = Worker {
                route: route.clone(),
                consumer: self.consumer.clone(),
                dead_letters: self.dead_letters.clone(),
                total: self.buffered.clone(),
                recycler: self.recycler.clone(),
            };
            worker.spawn(topic, partition, offset)
        });
        if offset < slot.next_offset {
            return slot.paused; // Already queued: re-fetched after a resume.
        }
        slot.next_offset = offset + 1;
        let record = OwnedRecord::copy_into(msg, topic_name, buffers);
        let size = record.footprint();
        let own = slot.bytes.fetch_add(size, Ordering::AcqRel) + size;
        let total = self.buffered.fetch_add(size, Ordering::AcqRel) + size;
        if !slot.paused && (own > self.max_buffered_bytes / 4 || total > self.max_buffered_bytes) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, "cannot pause partition");
            }
            slot.paused = true;
            self.health.count_pause();
        }
        slot.pending.push(record);
        slot.paused
    }

    /// Resumes paused partitions whose queue is down to half of its share while the total
    /// is below three quarters of the budget. Returns true while some partition stays
    /// paused.
    fn refill(&self) -> bool {
        let mut partitions = self.shared.lock();
        let share = self.max_buffered_bytes / 4;
        let total_ok = self.buffered.load(Ordering::Acquire) <= self.max_buffered_bytes / 4 * 3;
        let mut still_paused = false;
        for (topic, slots) in partitions.iter_mut() {
            for (partition, slot) in slots.iter_mut().filter(|(_, s)| s.paused) {
                if total_ok && slot.bytes.load(Ordering::Acquire) <= share / 2 {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(topic, *partition);
                    match self.consumer.resume(&tpl) {
                        Ok(()) => slot.paused = false,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot resume partition");
                            still_paused = true;
                        }
                    }
                } else {
                    still_paused = true;
                }
            }
        }
        still_paused
    }

    async fn shutdown(self) {
        let started = Instant::now();
        let slots: Vec<_> = self
            .shared
            .lock()
            .drain()
            .flat_map(|(topic, slots)| slots.into_iter().map(move |(partition, slot)| ((topic.clone(), partition), slot)))
            .collect();
        tracing::info!(partitions = slots.len(), "shutting down: draining workers");
        let drain_timeout = self.drain_timeout;
        // Dropping the queue senders lets workers finish what they hold, then exit.
        let mut completed = Vec::new();
        let waits: Vec<_> = slots
            .into_iter()
            .map(|((topic, partition), slot)| {
                let partition::Slot { tx, cancel, done, abort, completed: last, .. } = slot;
                drop(tx);
                completed.push((topic, partition, last));
                (cancel, done, abort)
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + drain_timeout;
            for (cancel, done, _) in &waits {
                if done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
                    cancel.cancel();
                }
            }
            // Cancelled workers stop after their current record; one stuck in a handler is
            // aborted, and its record (not stored) is processed again after a restart.
            for (_, done, abort) in &waits {
                if done.recv_timeout(Duration::from_secs(5)).is_err() {
                    abort.abort();
                }
            }
        })
        .await;
        // Workers that were aborted could not store what they finished before.
        for (topic, partition, last) in &completed {
            partition::store_completed(&*self.consumer, topic, *partition, last.load(Ordering::Acquire));
        }
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) | Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "final commit failed"),
            Err(e) => tracing::warn!(error = %e, "final commit task failed"),
        }
        if let Err(e) = self.dead_letters.publisher.flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "dead-letter producer flush failed");
        }
        self.health.set_running(false);
        self.shared.closing.store(true, Ordering::Release);
        // Closing leaves the group; it can block, so it runs on a blocking thread.
        let consumer = self.consumer;
        drop(self.routes);
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                consumer.unsubscribe();
                drop(consumer);
            }),
        )
        .await;
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "consumer stopped");
    }
}
