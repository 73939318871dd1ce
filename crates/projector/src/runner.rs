//! The projector: a consumer-group member that folds a topic into a view.
//!
//! # How a record flows
//! 1. The poll loop receives records (it never waits for the database) and decodes each
//!    once into its partition's buffer. Once the buffers hold four batches' worth of
//!    records the store can take, the loop stops taking records until a batch commits:
//!    librdkafka keeps prefetching up to `queued.max.messages.kbytes` and then waits,
//!    which costs nothing. (Pausing a partition instead makes librdkafka drop what it
//!    prefetched and fetch it again after the resume; done on every full buffer, that
//!    cost two thirds of the projector's throughput on a backlog.) The loop holds back
//!    for at most a second, so rebalances and `max.poll.interval.ms` are served even
//!    when the store is stuck; after that, a partition whose buffer reaches
//!    `max_buffered` is paused, and resumed when it is half empty. Memory is bounded by
//!    `max_buffered` records per partition plus the client's queue.
//! 2. While the store thread is idle, the loop hands it the buffered records of every
//!    ready partition as one batch (at most `max_batch` records): one transaction that
//!    moves each partition's position by compare-and-set and applies the events.
//! 3. After the commit the loop drops the committed records and mirrors the positions to
//!    the group's committed offsets (asynchronously, for lag tools only).
//!
//! # Failures
//! - A projection error on a record rolls the batch back; the records before it are
//!   committed in the next batch, the record itself is retried alone with backoff.
//! - A record that cannot be decoded, a permanent error, or running out of retries makes
//!   a poison record. By [`OnPoison::DeadLetter`] (default) it is written to the
//!   dead-letter topic, and only once the broker acknowledged it does a transaction move
//!   the position past it (recording the reason in `herald_dead_letters`). By
//!   [`OnPoison::Pause`] the partition stops there (circuit open) until an operator calls
//!   [`Control::retry`] or [`Control::skip`].
//! - A batch whose compare-and-set fails (another member moved the position) is rolled
//!   back; the partition is re-read from the store and the client seeks there.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use herald_bus::codec::{Codec, SingleObject};
use herald_bus::consumer::OwnedRecord;
use herald_bus::dead_letter::{self, Failure, Stage};
use herald_bus::{EventFamily, KafkaConfig, Publisher, PublisherOptions, RetryPolicy, Topic};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::batch::{Action, Batch, Item, Outcome, Slice};
use crate::context::{Context, Membership, Shared};
#[cfg(feature = "crash-points")]
use crate::crash::{CrashPoint, Stage as CrashStage};
use crate::error::ProjectorError;
use crate::position::Key;
use crate::projection::Projection;
use crate::status::{PartitionStatus, StatusHandle, Watermarks};
use crate::store::Store;
use crate::worker::{Flight, Job, Worker};

/// Consumer properties the projector sets. Offsets are never stored automatically;
/// `enable.auto.commit` only mirrors the positions the projector stores after each
/// commit, for lag tools.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "1000"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("isolation.level", "read_committed"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.wait.max.ms", "100"),
    // librdkafka waits this long to fetch again once its prefetch queue was full; its 1 s
    // default stalls a projector catching up on a backlog (see herald-bus's defaults).
    ("fetch.queue.backoff.ms", "10"),
    ("enable.partition.eof", "true"),
];

/// Most records the poll loop takes from the client in one go.
const MAX_RECEIVE: usize = 64;

/// The longest the poll loop stops taking records because the store is behind.
const MAX_HOLD: Duration = Duration::from_secs(1);

/// What to do with a poison record (undecodable, or failing permanently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPoison {
    /// Write it to the dead-letter topic and move on (default).
    #[default]
    DeadLetter,
    /// Stop the partition there (circuit open) until an operator retries or skips it.
    Pause,
}

/// Where a projector stops by itself (used by rebuilds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAt {
    /// Never: run until the shutdown future completes.
    Never,
    /// Once every partition reached the end of the log as it was when the projector started.
    CaughtUp,
    /// Once every partition reached the given offsets (exclusive); partitions not listed
    /// are read to their end at start.
    Offsets(BTreeMap<i32, i64>),
    /// Apply only records with a timestamp before this (milliseconds since the epoch),
    /// then stop at the end of the log as it was at start.
    Before(i64),
}

/// Why [`Projector::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// The shutdown future completed.
    Shutdown,
    /// The [`StopAt`] point was reached.
    StopPoint,
    /// A rebuild made another version live: build a new projector (it will write the
    /// live version, from that version's stored positions).
    Superseded {
        /// The version now live.
        live: u32,
    },
}

/// Operator commands for a running projector.
#[derive(Debug, Clone)]
pub struct Control {
    tx: Arc<Mutex<mpsc::UnboundedSender<Command>>>,
}

impl Default for Control {
    fn default() -> Self {
        Control { tx: Arc::new(Mutex::new(mpsc::unbounded_channel().0)) }
    }
}

impl Control {
    fn connect(&self) -> mpsc::UnboundedReceiver<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = tx;
        rx
    }

    fn send(&self, command: Command) -> bool {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(command).is_ok()
    }
}

#[derive(Debug)]
enum Command {
    Retry(i32),
    Skip(i32),
}

impl Control {
    /// Closes the circuit of `partition`: its failing record is tried again.
    pub fn retry(&self, partition: i32) -> bool {
        self.send(Command::Retry(partition))
    }

    /// Dead-letters the failing record of `partition` and moves on.
    pub fn skip(&self, partition: i32) -> bool {
        self.send(Command::Skip(partition))
    }
}

/// Builds a [`Projector`]. Defaults: batches of at most 1000 records, 5000 records
/// buffered per partition, [`RetryPolicy::default`], [`OnPoison::DeadLetter`].
pub struct ProjectorBuilder<F, P> {
    config: KafkaConfig,
    group: String,
    topic: String,
    projection: P,
    store: Arc<dyn Store>,
    properties: Vec<(String, String)>,
    max_batch: usize,
    max_buffered: usize,
    retry: RetryPolicy,
    on_poison: OnPoison,
    #[cfg(feature = "crash-points")]
    crash: Option<CrashPoint>,
    revoke_timeout: Duration,
    drain_timeout: Duration,
    version: Option<u32>,
    stop_at: StopAt,
    create_dead_letter_topic: bool,
    handles: Option<(StatusHandle, Control)>,
    _family: PhantomData<fn() -> F>,
}

impl<F: EventFamily, P: Projection<F>> ProjectorBuilder<F, P> {
    /// Reports to `status` and takes commands from `control` (handles of an earlier
    /// projector, so an HTTP server outlives the restart after a rebuild swapped versions).
    pub fn handles(mut self, status: StatusHandle, control: Control) -> Self {
        self.handles = Some((status, control));
        self
    }

    /// Sets a librdkafka property of the consumer (wins over the defaults and the
    /// [`KafkaConfig`]'s properties).
    pub fn kafka_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Most records in one transaction (default 1000).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Records buffered per partition before it is paused (default 5000). The poll loop
    /// normally stops taking records well before (at four batches' worth); this bound
    /// matters when the store has been stuck for over a second, and for a partition held
    /// by a failing record.
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.max_buffered = n.max(2);
        self
    }

    /// Retry policy for failing records (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// What to do with poison records (default [`OnPoison::DeadLetter`]).
    pub fn on_poison(mut self, policy: OnPoison) -> Self {
        self.on_poison = policy;
        self
    }

    /// A crash point, for fault tests only (feature `crash-points`, which only tests
    /// enable: production builds have no way to abort at a crash point).
    #[cfg(feature = "crash-points")]
    pub fn crash_point(mut self, point: CrashPoint) -> Self {
        self.crash = Some(point);
        self
    }

    /// How long a revocation waits for the batch in flight (default 10 s).
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// How long shutdown waits for the batch in flight (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Writes view version `version` instead of the live one (rebuilds).
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Stops by itself at this point (default: never).
    pub fn stop_at(mut self, stop: StopAt) -> Self {
        self.stop_at = stop;
        self
    }

    /// Whether to create the dead-letter topic when missing (default true).
    pub fn create_dead_letter_topic(mut self, create: bool) -> Self {
        self.create_dead_letter_topic = create;
        self
    }

    /// Migrates the store, creates the consumer and the dead-letter producer, subscribes.
    /// Needs tokio's multi-threaded runtime (rebalance hooks wait for the store thread).
    pub async fn build(self) -> Result<Projector<F, P>, ProjectorError> {
        tracing::info!(projection = P::NAME, topic = %self.topic, group = %self.group, store = self.store.kind(), "projector starting");
        let projection = Arc::new(self.projection);
        let version = crate::views::prepare::<F, P>(self.store.clone(), projection.clone(), self.version).await?;
        let key = Key { projection: P::NAME.to_owned(), version, topic: self.topic.clone() };
        if self.create_dead_letter_topic {
            let partitions = herald_bus::admin::partition_count(&self.config, &self.topic).await?.unwrap_or(1);
            let spec = herald_bus::admin::TopicSpec::new(dead_letter::topic_for(&self.topic)).partitions(partitions as i32);
            herald_bus::admin::create_topics(&self.config, &[spec]).await?;
        }
        let flight = Arc::new(Flight::default());
        let ownership = Arc::default();
        let shared = Arc::new(Shared {
            key: key.clone(),
            store: self.store.clone(),
            reader: Mutex::new(None),
            ownership: Arc::clone(&ownership),
            generation: AtomicU64::new(0),
            flight: flight.clone(),
            membership: Mutex::new(Vec::new()),
            revoke_timeout: self.revoke_timeout,
            poll_exceeded: AtomicBool::new(false),
            last_client_error: Mutex::new(None),
        });
        let mut client = self.config.client_config(CONSUMER_DEFAULTS);
        for (k, v) in &self.properties {
            client.set(k, v);
        }
        client.set("group.id", &self.group).set("enable.auto.offset.store", "false");
        let consumer = StreamConsumer::from_config_and_context(&client, Context { shared: shared.clone() })?;
        consumer.subscribe(&[&self.topic])?;
        let publisher = Publisher::new(&self.config, PublisherOptions::new(format!("herald:projector:{}", P::NAME)))?;

        let (jobs, job_rx) = std_mpsc::channel();
        let follow_live = self.version.is_none();
        let worker = Worker::<F, P> {
            store: self.store.clone(),
            projection,
            key: key.clone(),
            ownership,
            flight,
            #[cfg(feature = "crash-points")]
            crash: self.crash.map(Arc::new),
            follow_live,
            _family: PhantomData,
        };
        #[cfg(feature = "crash-points")]
        let crash = worker.crash.clone();
        let thread = std::thread::Builder::new()
            .name(format!("herald-projector-{}", P::NAME))
            .spawn(move || worker.run(job_rx))
            .map_err(|e| ProjectorError::StoreThread(e.to_string()))?;
        let (status, control) = self.handles.unwrap_or_default();
        let control_rx = control.connect();
        status.update(|s| {
            s.projection = P::NAME.to_owned();
            s.version = version;
            s.topic = self.topic.clone();
            s.group = self.group.clone();
        });
        Ok(Projector {
            consumer: Arc::new(consumer),
            shared,
            topic: Arc::from(key.topic.as_str()),
            key,
            group: self.group,
            watermarks: Arc::new(Watermarks::new(self.config.clone(), self.topic.clone())),
            codec: Arc::new(SingleObject::new(F::schemas().clone())),
            jobs,
            thread,
            publisher,
            status,
            control,
            control_rx,
            max_batch: self.max_batch,
            max_buffered: self.max_buffered,
            retry: self.retry,
            on_poison: self.on_poison,
            drain_timeout: self.drain_timeout,
            stop_at: self.stop_at,
            follow_live,
            #[cfg(feature = "crash-points")]
            crash,
            _projection: PhantomData,
        })
    }
}

/// A running projection: see the [module docs](self).
pub struct Projector<F: EventFamily, P> {
    consumer: Arc<StreamConsumer<Context>>,
    shared: Arc<Shared>,
    key: Key,
    /// The topic's name, shared by every record copied from it.
    topic: Arc<str>,
    group: String,
    /// End offsets for the lag, through one client kept for the projector's life.
    watermarks: Arc<Watermarks>,
    codec: Arc<dyn Codec>,
    jobs: std_mpsc::Sender<Job<F>>,
    thread: std::thread::JoinHandle<()>,
    publisher: Publisher,
    status: StatusHandle,
    control: Control,
    control_rx: mpsc::UnboundedReceiver<Command>,
    max_batch: usize,
    max_buffered: usize,
    retry: RetryPolicy,
    on_poison: OnPoison,
    drain_timeout: Duration,
    stop_at: StopAt,
    follow_live: bool,
    #[cfg(feature = "crash-points")]
    crash: Option<Arc<CrashPoint>>,
    _projection: PhantomData<fn() -> P>,
}

/// Why a partition is not moving freely.
#[derive(Debug)]
enum Block {
    /// The record at `offset` failed; retry it alone at `until`.
    Retry { offset: i64, attempts: u32, until: Instant, error: String },
    /// The record at `offset` is being written to the dead-letter topic.
    DeadLettering { offset: i64 },
    /// Circuit open at `offset` until an operator acts (`parked`: because its dead letter
    /// cannot be written).
    Open { offset: i64, failure: Failure, parked: bool },
}

impl Block {
    fn offset(&self) -> i64 {
        match self {
            Block::Retry { offset, .. } | Block::DeadLettering { offset } | Block::Open { offset, .. } => *offset,
        }
    }
}

struct Part<F> {
    generation: u64,
    /// Stored next offset (`None`: nothing applied yet).
    position: Option<i64>,
    /// False until the stored position is known and the client sought there.
    synced: bool,
    /// Lowest offset accepted from the client (`None`: any).
    expected: Option<i64>,
    buffer: VecDeque<Arc<Item<F>>>,
    paused: bool,
    block: Option<Block>,
    /// Dead letters acknowledged by the broker: skipped (and recorded) in the next batch.
    skips: BTreeMap<i64, Failure>,
    /// End of the log seen at EOF or from the broker.
    end: Option<i64>,
    /// Where this partition stops (stop-at modes): exclusive offset.
    stop: Option<i64>,
    /// The client reported the end of the partition and nothing arrived since.
    eof: bool,
    /// A record at or past the stop point arrived (so every record before it did).
    passed_stop: bool,
    last_error: Option<String>,
}

impl<F> Part<F> {
    fn new(generation: u64, position: Option<i64>, synced: bool) -> Self {
        Part {
            generation,
            position,
            synced,
            expected: position,
            buffer: VecDeque::new(),
            paused: false,
            block: None,
            skips: BTreeMap::new(),
            end: None,
            stop: None,
            eof: false,
            passed_stop: false,
            last_error: None,
        }
    }

    /// True when every record before the stop point was applied.
    fn done(&self) -> bool {
        let Some(stop) = self.stop else { return false };
        self.synced
            && (self.position.unwrap_or(0) >= stop
                || ((self.passed_stop || self.eof) && self.buffer.is_empty() && self.block.is_none()))
    }
}

/// A dead letter acknowledged by the broker (`unwritable: Some(why)`: one that can never
/// be written).
struct DeadLettered {
    partition: i32,
    generation: u64,
    offset: i64,
    failure: Failure,
    unwritable: Option<String>,
}

struct Loop<F> {
    parts: BTreeMap<i32, Part<F>>,
    in_flight: Option<oneshot::Receiver<Outcome>>,
    store_retry_at: Option<Instant>,
    store_failures: u32,
    next_first: usize,
    applied_total: u64,
    dead_lettered_total: u64,
    batches_total: u64,
    last_error: Option<String>,
    stops: Option<BTreeMap<i32, i64>>,
    /// Records of the last committed batch, freed only after the next batch is on its
    /// way: freeing a batch's worth of records takes long enough to leave the store
    /// thread idle if it came first.
    released: Vec<Arc<Item<F>>>,
}

impl<F: EventFamily, P: Projection<F>> Projector<F, P> {
    /// Starts building a projector of `projection` over `topic` in consumer group `group`,
    /// storing views and positions in `store`.
    pub fn builder(config: KafkaConfig, group: impl Into<String>, topic: &Topic<F>, projection: P, store: Arc<dyn Store>) -> ProjectorBuilder<F, P> {
        ProjectorBuilder {
            config,
            group: group.into(),
            topic: topic.name().to_owned(),
            projection,
            store,
            properties: Vec::new(),
            max_batch: 1000,
            max_buffered: 5000,
            retry: RetryPolicy::default(),
            on_poison: OnPoison::default(),
            #[cfg(feature = "crash-points")]
            crash: None,
            revoke_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            version: None,
            stop_at: StopAt::Never,
            create_dead_letter_topic: true,
            handles: None,
            _family: PhantomData,
        }
    }

    /// The live status (for `GET /status`).
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Operator commands (retry or skip a partition's failing record).
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The view version this projector writes.
    pub fn version(&self) -> u32 {
        self.key.version
    }

    /// Runs until `shutdown` completes (or the [`StopAt`] point is reached), then shuts
    /// down in order: the batch in flight finishes (up to the drain timeout), positions
    /// are mirrored to the group, the dead-letter producer is flushed, the member leaves
    /// the group, the store thread stops.
    ///
    /// Records fetched but not yet committed are simply fetched again by the next owner:
    /// the stored position says where to start.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<Stopped, ProjectorError> {
        tokio::pin!(shutdown);
        self.status.update(|s| s.running = true);
        let mut state = Loop::<F> {
            parts: BTreeMap::new(),
            in_flight: None,
            store_retry_at: None,
            store_failures: 0,
            next_first: 0,
            applied_total: 0,
            dead_lettered_total: 0,
            batches_total: 0,
            last_error: None,
            stops: None,
            released: Vec::new(),
        };
        if self.stop_at != StopAt::Never {
            state.stops = Some(self.stop_offsets().await?);
        }
        let cancel = CancellationToken::new();
        let (dlq_tx, mut dlq_rx) = mpsc::unbounded_channel::<DeadLettered>();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ends_refreshed = Instant::now() - Duration::from_secs(60);
        let (ends_tx, mut ends_rx) = mpsc::channel::<BTreeMap<i32, (i64, i64)>>(1);
        let (live_tx, mut live_rx) = mpsc::unbounded_channel::<u32>();
        let mut live_checked = Instant::now();
        // Since when the loop holds back records because the store is behind.
        let mut held_since: Option<Instant> = None;
        let mut stopped = Stopped::Shutdown;
        loop {
            let room = self.intake_room(&state, &mut held_since);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                outcome = async { match state.in_flight.as_mut() { Some(rx) => rx.await, None => std::future::pending().await } } => {
                    state.in_flight = None;
                    self.membership(&mut state);
                    match outcome {
                        Ok(Outcome::Superseded { live }) => {
                            tracing::info!(live, version = self.key.version, "another view version is live now: stopping");
                            stopped = Stopped::Superseded { live };
                            break;
                        }
                        Ok(outcome) => self.handle_outcome(&mut state, outcome, &cancel, &dlq_tx).await,
                        Err(_) => return Err(ProjectorError::StoreThread("the store thread dropped a batch".into())),
                    }
                }
                Some(acked) = dlq_rx.recv() => {
                    #[cfg(feature = "crash-points")]
                    if acked.unwritable.is_none()
                        && let Some(crash) = &self.crash
                    {
                        crash.reached(CrashStage::AfterDeadLetter);
                    }
                    if let Some(part) = state.parts.get_mut(&acked.partition)
                        && part.generation == acked.generation
                        && matches!(part.block, Some(Block::DeadLettering { offset }) if offset == acked.offset)
                    {
                        match acked.unwritable {
                            None => {
                                part.block = None;
                                part.skips.insert(acked.offset, acked.failure);
                            }
                            // It can never be written: stop the partition there (paused,
                            // reported unhealthy) until an operator acts, never loop.
                            Some(why) => {
                                tracing::error!(partition = acked.partition, offset = acked.offset, error = %why, "the dead letter cannot be written: partition parked until an operator acts");
                                let reason = format!("dead letter cannot be written: {why} (record failed: {})", acked.failure.reason);
                                state.last_error = Some(format!("partition {} offset {}: {reason}", acked.partition, acked.offset));
                                part.last_error = Some(reason.clone());
                                if !part.paused {
                                    self.pause(acked.partition, true);
                                    part.paused = true;
                                }
                                part.block = Some(Block::Open { offset: acked.offset, failure: Failure { reason, ..acked.failure }, parked: true });
                            }
                        }
                    }
                }
                Some(command) = self.control_rx.recv() => self.command(&mut state, command, &cancel, &dlq_tx),
                Some(live) = live_rx.recv() => {
                    if live != self.key.version {
                        tracing::info!(live, version = self.key.version, "another view version is live now: stopping");
                        stopped = Stopped::Superseded { live };
                        break;
                    }
                }
                Some(ends) = ends_rx.recv() => {
                    for (p, (_, end)) in ends {
                        if let Some(part) = state.parts.get_mut(&p) {
                            part.end = Some(part.end.map_or(end, |e| e.max(end)));
                        }
                    }
                }
                received = self.consumer.recv(), if room > 0 => {
                    let mut received = Some(received);
                    let mut taken = 0;
                    // While the store thread is busy, take what else the client has
                    // ready without waiting (up to MAX_RECEIVE, and the room there is),
                    // so the loop's other branches are polled once per run of records,
                    // not once per record. Each record adds at most one to the buffers.
                    while let Some(result) = received {
                        self.membership(&mut state);
                        match result {
                            Ok(msg) => {
                                if let Some(record) = self.accept(&mut state, &msg) {
                                    drop(msg);
                                    self.receive(&mut state, record).await;
                                }
                            }
                            Err(KafkaError::PartitionEOF(p)) => {
                                if let Some(part) = state.parts.get_mut(&p) {
                                    part.end = part.expected.or(part.end);
                                    part.eof = true;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "consumer error");
                                state.last_error = Some(e.to_string());
                            }
                        }
                        taken += 1;
                        // Stop as soon as the store thread could take a batch: keeping it
                        // busy matters more than polling less.
                        let store_busy = state.in_flight.is_some() && !self.shared.flight.is_idle();
                        let go_on = taken < MAX_RECEIVE.min(room) && store_busy;
                        received = if go_on { self.consumer.recv().now_or_never() } else { None };
                    }
                }
                _ = tick.tick() => {
                    self.membership(&mut state);
                    self.resume_drained(&mut state);
                    if ends_refreshed.elapsed() > Duration::from_secs(2) {
                        ends_refreshed = Instant::now();
                        let (watermarks, tx) = (self.watermarks.clone(), ends_tx.clone());
                        tokio::task::spawn_blocking(move || {
                            if let Ok(ends) = watermarks.fetch() {
                                let _ = tx.try_send(ends);
                            }
                        });
                    }
                    self.publish_status(&state);
                    // An idle projector learns of a swap here (a busy one at its next batch).
                    if self.follow_live && live_checked.elapsed() > Duration::from_secs(1) {
                        live_checked = Instant::now();
                        let (tx, rx) = oneshot::channel();
                        if self.jobs.send(Job::LiveVersion(tx)).is_ok() {
                            let live_tx = live_tx.clone();
                            tokio::spawn(async move {
                                if let Ok(Ok(Some(live))) = rx.await {
                                    let _ = live_tx.send(live);
                                }
                            });
                        }
                    }
                }
            }
            if state.in_flight.is_none() {
                self.dispatch(&mut state, &cancel, &dlq_tx);
            }
            state.released.clear();
            if state.stops.is_some() && state.in_flight.is_none() && self.reached_stop(&state) {
                tracing::info!("stop point reached");
                stopped = Stopped::StopPoint;
                break;
            }
        }
        self.shutdown(state, cancel).await?;
        Ok(stopped)
    }

    /// Offsets each partition stops at (exclusive), for the stop-at modes.
    async fn stop_offsets(&self) -> Result<BTreeMap<i32, i64>, ProjectorError> {
        let watermarks = self.watermarks.clone();
        let ends = tokio::task::spawn_blocking(move || watermarks.fetch())
            .await
            .map_err(|e| ProjectorError::StoreThread(e.to_string()))??;
        let mut stops: BTreeMap<i32, i64> = ends.into_iter().map(|(p, (_, end))| (p, end)).collect();
        if let StopAt::Offsets(given) = &self.stop_at {
            for (p, o) in given {
                stops.insert(*p, *o);
            }
        }
        Ok(stops)
    }

    fn reached_stop(&self, state: &Loop<F>) -> bool {
        let Some(stops) = &state.stops else { return false };
        // Every partition of the topic must be owned here and done (rebuilds run alone).
        stops.keys().all(|p| state.parts.get(p).is_some_and(Part::done))
    }

    /// Applies membership changes recorded by the rebalance hooks.
    fn membership(&self, state: &mut Loop<F>) {
        for event in self.shared.take_membership() {
            match event {
                Membership::Assigned { partition, generation, position } => {
                    let mut part = match position {
                        Ok(position) => Part::new(generation, position, true),
                        Err(()) => Part::new(generation, None, false),
                    };
                    part.stop = state.stops.as_ref().and_then(|s| s.get(&partition).copied());
                    if part.synced {
                        // Paused by a resync (or an earlier owner in this process): go.
                        self.pause(partition, false);
                    } else {
                        self.resync(partition, generation);
                    }
                    state.parts.insert(partition, part);
                }
                Membership::Revoked { partition } => {
                    state.parts.remove(&partition);
                }
            }
        }
    }

    /// Pauses the partition, reads its stored position on the store thread, seeks there
    /// (while paused, so no record of the old fetch position gets through), and hands the
    /// loop an assignment at that position; the loop resumes the partition.
    fn resync(&self, partition: i32, generation: u64) {
        self.pause(partition, true);
        let jobs = self.jobs.clone();
        let consumer = self.consumer.clone();
        let shared = self.shared.clone();
        let topic = self.key.topic.clone();
        tokio::spawn(async move {
            let mut tries = 0u32;
            loop {
                let owned = shared.ownership.lock().unwrap_or_else(|p| p.into_inner()).get(&partition) == Some(&generation);
                if !owned {
                    return;
                }
                let (tx, rx) = oneshot::channel();
                if jobs.send(Job::Position(partition, tx)).is_err() {
                    return;
                }
                if let Ok(Ok(position)) = rx.await {
                    let offset = position.map_or(Offset::Beginning, Offset::Offset);
                    let (consumer, topic) = (consumer.clone(), topic.clone());
                    let seeked = tokio::task::spawn_blocking(move || consumer.seek(&topic, partition, offset, Duration::from_secs(10))).await;
                    if matches!(seeked, Ok(Ok(()))) {
                        shared.membership.lock().unwrap_or_else(|p| p.into_inner()).push(Membership::Assigned {
                            partition,
                            generation,
                            position: Ok(position),
                        });
                        return;
                    }
                    tracing::warn!(partition, ?seeked, "seek failed; retrying");
                }
                tries += 1;
                tracing::warn!(partition, tries, "cannot resynchronise the partition yet; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(tries.min(50)))).await;
            }
        });
    }

    /// Copies a received record if its partition takes it (synced, not a repeat, before
    /// the stop point).
    fn accept(&self, state: &mut Loop<F>, msg: &BorrowedMessage<'_>) -> Option<OwnedRecord> {
        let part = state.parts.get_mut(&msg.partition())?;
        if !part.synced || part.expected.is_some_and(|e| msg.offset() < e) {
            return None;
        }
        part.eof = false;
        let before = match (&self.stop_at, msg.timestamp().to_millis()) {
            (StopAt::Before(limit), Some(ts)) => ts < *limit,
            _ => true,
        };
        if part.stop.is_some_and(|stop| msg.offset() >= stop) || !before {
            part.passed_stop = true;
            return None;
        }
        part.expected = Some(msg.offset() + 1);
        Some(OwnedRecord::copy(msg, &self.topic))
    }

    /// Decodes an accepted record into its partition's buffer.
    async fn receive(&self, state: &mut Loop<F>, msg: OwnedRecord) {
        let partition = msg.partition();
        let decoded = herald_bus::consumer::decode_record::<F>(&*self.codec, &msg).await;
        let Some(part) = state.parts.get_mut(&partition) else { return };
        let offset = msg.offset();
        part.buffer.push_back(Arc::new(Item { offset, msg, decoded }));
        if !part.paused && part.buffer.len() >= self.max_buffered {
            self.pause(partition, true);
            part.paused = true;
        }
    }

    /// How many records the loop may take now: up to four batches the store can take
    /// buffered (records of blocked partitions do not count: they wait for a retry or an
    /// operator), none while that is reached, and [`MAX_RECEIVE`] at a time once it has
    /// held back for [`MAX_HOLD`].
    fn intake_room(&self, state: &Loop<F>, held_since: &mut Option<Instant>) -> usize {
        let ready: usize = state.parts.values().filter(|p| p.block.is_none()).map(|p| p.buffer.len()).sum();
        let limit = self.max_batch.saturating_mul(4);
        if ready < limit {
            *held_since = None;
            return limit - ready;
        }
        if held_since.get_or_insert_with(Instant::now).elapsed() >= MAX_HOLD { MAX_RECEIVE } else { 0 }
    }

    fn pause(&self, partition: i32, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.key.topic, partition);
        let result = if pause { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
        if let Err(e) = result {
            tracing::warn!(partition, pause, error = %e, "cannot pause or resume");
        }
    }

    fn resume_drained(&self, state: &mut Loop<F>) {
        for (&partition, part) in state.parts.iter_mut() {
            let open = matches!(part.block, Some(Block::Open { .. }));
            if part.paused && !open && part.buffer.len() * 2 <= self.max_buffered {
                self.pause(partition, false);
                part.paused = false;
            }
        }
    }

    /// Hands the store thread its next batch, if anything is ready.
    fn dispatch(&self, state: &mut Loop<F>, cancel: &CancellationToken, dlq: &mpsc::UnboundedSender<DeadLettered>) {
        let now = Instant::now();
        if state.store_retry_at.is_some_and(|t| t > now) {
            return;
        }
        let mut slices = Vec::new();
        let mut room = self.max_batch;
        let keys: Vec<i32> = state.parts.keys().copied().collect();
        if keys.is_empty() {
            return;
        }
        let start = state.next_first % keys.len();
        state.next_first = state.next_first.wrapping_add(1);
        let mut poisons = Vec::new();
        for &partition in keys[start..].iter().chain(&keys[..start]) {
            if room == 0 {
                break;
            }
            let Some(part) = state.parts.get_mut(&partition) else { continue };
            if !part.synced || part.buffer.is_empty() {
                continue;
            }
            let mut items = Vec::new();
            for item in &part.buffer {
                if items.len() >= room {
                    break;
                }
                if let Some(failure) = part.skips.get(&item.offset) {
                    items.push((item.clone(), Action::Skip(failure.clone())));
                    continue;
                }
                match &part.block {
                    Some(block) if item.offset == block.offset() => match block {
                        Block::Retry { until, .. } if items.is_empty() && *until <= now => {
                            // A failing record is retried alone, after the records before it.
                            items.push((item.clone(), Action::Apply));
                            break;
                        }
                        _ => break,
                    },
                    _ => {}
                }
                if let Err(failure) = &item.decoded {
                    if part.block.is_none() {
                        if items.is_empty() {
                            poisons.push((partition, item.offset, failure.clone()));
                        } else {
                            // Commit what precedes it first.
                        }
                    }
                    break;
                }
                items.push((item.clone(), Action::Apply));
            }
            if items.is_empty() {
                continue;
            }
            room -= items.len();
            let to = items.last().map_or(0, |(i, _)| i.offset + 1);
            slices.push(Slice { partition, generation: part.generation, from: part.position, to, items });
        }
        for (partition, offset, failure) in poisons {
            self.poison(state, partition, offset, failure, self.on_poison, cancel, dlq);
        }
        if slices.is_empty() {
            return;
        }
        let batch = Batch { slices };
        let (tx, rx) = oneshot::channel();
        self.shared.flight.begin(batch.slices.iter().map(|s| s.partition));
        tracing::trace!(records = batch.len(), "batch to the store");
        if self.jobs.send(Job::Apply(batch, tx)).is_err() {
            self.shared.flight.end();
            return;
        }
        state.in_flight = Some(rx);
    }

    async fn handle_outcome(&self, state: &mut Loop<F>, outcome: Outcome, cancel: &CancellationToken, dlq: &mpsc::UnboundedSender<DeadLettered>) {
        match outcome {
            Outcome::Committed { positions } => {
                state.store_failures = 0;
                state.store_retry_at = None;
                state.batches_total += 1;
                let mut tpl = TopicPartitionList::new();
                for (partition, to, applied) in positions {
                    state.applied_total += applied as u64;
                    metrics::counter!("herald_projector_events_total", "projection" => P::NAME).increment(applied as u64);
                    let Some(part) = state.parts.get_mut(&partition) else { continue };
                    part.position = Some(to);
                    while part.buffer.front().is_some_and(|i| i.offset < to) {
                        state.released.extend(part.buffer.pop_front());
                    }
                    if part.block.as_ref().is_some_and(|b| b.offset() < to) {
                        part.block = None;
                    }
                    let before = part.skips.len();
                    part.skips.retain(|o, _| *o >= to);
                    state.dead_lettered_total += (before - part.skips.len()) as u64;
                    let _ = tpl.add_partition_offset(&self.key.topic, partition, Offset::Offset(to));
                }
                metrics::counter!("herald_projector_batches_total", "projection" => P::NAME).increment(1);
                // Mirror for lag tools; fails harmlessly for partitions no longer owned.
                if let Err(e) = self.consumer.store_offsets(&tpl) {
                    tracing::debug!(error = %e, "positions not mirrored to the group");
                }
            }
            Outcome::EventFailed { partition, offset, error } => {
                tracing::warn!(partition, offset, %error, "projection failed on a record");
                state.last_error = Some(format!("partition {partition} offset {offset}: {error}"));
                let Some(part) = state.parts.get_mut(&partition) else { return };
                part.last_error = Some(error.to_string());
                let attempts = match &part.block {
                    Some(Block::Retry { offset: o, attempts, .. }) if *o == offset => *attempts,
                    _ => 0,
                };
                let attempts = if error.is_store_conflict() { attempts } else { attempts + 1 };
                if error.is_permanent() || attempts >= self.retry.max_attempts.max(1) {
                    let failure = Failure { stage: Stage::Handler, reason: error.to_string(), attempts };
                    self.poison(state, partition, offset, failure, self.on_poison, cancel, dlq);
                } else {
                    let until = Instant::now() + self.retry.backoff(attempts.max(1));
                    part.block = Some(Block::Retry { offset, attempts, until, error: error.to_string() });
                }
            }
            Outcome::Fenced { partition, stored } => {
                tracing::warn!(partition, ?stored, "fenced: another member moved the position; seeking there");
                state.last_error = Some(format!("partition {partition} fenced at {stored:?}"));
                let Some(part) = state.parts.get_mut(&partition) else { return };
                part.block = None;
                match stored {
                    // Moved forward (the usual case): the records fetched so far are
                    // contiguous from our old position, so drop those below the stored
                    // position and keep fetching; no seek needed.
                    Some(s) if part.position.is_none_or(|p| s >= p) => {
                        part.position = Some(s);
                        while part.buffer.front().is_some_and(|i| i.offset < s) {
                            part.buffer.pop_front();
                        }
                        part.expected = Some(part.expected.map_or(s, |e| e.max(s)));
                    }
                    // Anything else: start over from the store.
                    _ => {
                        part.synced = false;
                        part.buffer.clear();
                        let generation = part.generation;
                        self.resync(partition, generation);
                    }
                }
            }
            Outcome::Revoked | Outcome::Superseded { .. } => {}
            Outcome::StoreFailed(e) => {
                state.store_failures += 1;
                let backoff = self.retry.backoff(state.store_failures.min(10));
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "store failed; retrying the batch");
                state.last_error = Some(format!("store: {e}"));
                state.store_retry_at = Some(Instant::now() + backoff);
            }
        }
    }

    /// A record the projection gives up on: dead-letter it, or open the circuit.
    #[allow(clippy::too_many_arguments)]
    fn poison(
        &self,
        state: &mut Loop<F>,
        partition: i32,
        offset: i64,
        failure: Failure,
        policy: OnPoison,
        cancel: &CancellationToken,
        dlq: &mpsc::UnboundedSender<DeadLettered>,
    ) {
        let Some(part) = state.parts.get_mut(&partition) else { return };
        state.last_error = Some(format!("partition {partition} offset {offset}: {} ({})", failure.reason, failure.stage.as_str()));
        part.last_error = Some(failure.reason.clone());
        if policy == OnPoison::Pause {
            tracing::error!(partition, offset, reason = %failure.reason, "poison record: circuit open until an operator acts");
            if !part.paused {
                self.pause(partition, true);
                part.paused = true;
            }
            part.block = Some(Block::Open { offset, failure, parked: false });
            return;
        }
        let Some(item) = part.buffer.iter().find(|i| i.offset == offset).cloned() else { return };
        part.block = Some(Block::DeadLettering { offset });
        let record = dead_letter::record(&item.msg.to_message(), &failure, &self.group, &dead_letter::topic_for(&self.key.topic));
        let publisher = self.publisher.clone();
        let (cancel, dlq, generation) = (cancel.clone(), dlq.clone(), part.generation);
        tokio::spawn(async move {
            let unwritable = match dead_letter::send_until_acked(&publisher, &record, &cancel).await {
                Ok(()) => {
                    tracing::warn!(partition, offset, stage = failure.stage.as_str(), reason = %failure.reason, "dead-lettered");
                    metrics::counter!("herald_projector_dead_lettered_total", "stage" => failure.stage.as_str()).increment(1);
                    None
                }
                Err(dead_letter::NotSent::Unwritable(e)) => Some(e.to_string()),
                Err(_) => return,
            };
            let _ = dlq.send(DeadLettered { partition, generation, offset, failure, unwritable });
        });
    }

    fn command(&self, state: &mut Loop<F>, command: Command, cancel: &CancellationToken, dlq: &mpsc::UnboundedSender<DeadLettered>) {
        match command {
            Command::Retry(partition) => {
                if let Some(part) = state.parts.get_mut(&partition)
                    && let Some(Block::Open { offset, .. }) = part.block
                {
                    tracing::info!(partition, offset, "operator: retry");
                    part.block = Some(Block::Retry { offset, attempts: 0, until: Instant::now(), error: String::new() });
                }
            }
            Command::Skip(partition) => {
                let open = state.parts.get(&partition).and_then(|p| match &p.block {
                    Some(Block::Open { offset, failure, .. }) => Some((*offset, failure.clone())),
                    _ => None,
                });
                if let Some((offset, failure)) = open {
                    tracing::info!(partition, offset, "operator: skip (dead-letter)");
                    // Dead-letter whatever the policy: the operator decided.
                    self.poison(state, partition, offset, failure, OnPoison::DeadLetter, cancel, dlq);
                }
            }
        }
    }

    fn publish_status(&self, state: &Loop<F>) {
        let partitions: Vec<PartitionStatus> = state
            .parts
            .iter()
            .map(|(&partition, part)| {
                let end = part.end.max(part.expected.filter(|_| part.end.is_some()));
                PartitionStatus {
                    partition,
                    position: part.position,
                    end_offset: end,
                    lag: end.map(|e| (e - part.position.unwrap_or(0)).max(0)),
                    state: match &part.block {
                        None => "running",
                        Some(Block::Retry { .. }) => "retrying",
                        Some(Block::DeadLettering { .. }) => "dead-lettering",
                        Some(Block::Open { parked: true, .. }) => "parked",
                        Some(Block::Open { .. }) => "circuit-open",
                    }
                    .to_owned(),
                    buffered: part.buffer.len(),
                    paused: part.paused,
                    last_error: match &part.block {
                        Some(Block::Retry { error, .. }) => Some(error.clone()),
                        Some(Block::Open { failure, .. }) => Some(failure.reason.clone()),
                        _ => part.last_error.clone(),
                    },
                }
            })
            .collect();
        let poll_exceeded = self.shared.poll_exceeded.load(std::sync::atomic::Ordering::Relaxed);
        self.status.update(|s| {
            s.partitions = partitions;
            s.applied_total = state.applied_total;
            s.dead_lettered_total = state.dead_lettered_total;
            s.batches_total = state.batches_total;
            s.last_error = state.last_error.clone();
            s.running = !poll_exceeded;
        });
        for p in &self.status.get().partitions {
            if let Some(lag) = p.lag {
                metrics::gauge!("herald_projector_lag", "projection" => P::NAME, "partition" => p.partition.to_string()).set(lag as f64);
            }
        }
    }

    async fn shutdown(self, mut state: Loop<F>, cancel: CancellationToken) -> Result<(), ProjectorError> {
        let started = Instant::now();
        tracing::info!("projector stopping");
        // The batch in flight commits or rolls back; nothing new is started.
        if let Some(rx) = state.in_flight.take() {
            match tokio::time::timeout(self.drain_timeout, rx).await {
                Ok(Ok(outcome)) => self.handle_outcome(&mut state, outcome, &cancel, &mpsc::unbounded_channel().0).await,
                _ => tracing::warn!("the batch in flight did not finish before the drain timeout"),
            }
        }
        cancel.cancel();
        self.publish_status(&state);
        self.status.update(|s| s.running = false);
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await;
        if let Ok(Err(e)) = committed {
            tracing::debug!(error = %e, "final mirror commit");
        }
        if let Err(e) = self.publisher.flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "dead-letter producer flush failed");
        }
        let consumer = self.consumer;
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                consumer.unsubscribe();
                drop(consumer);
            }),
        )
        .await;
        drop(self.jobs);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "projector stopped");
        Ok(())
    }
}
