//! The poll loop and the [`Runtime`] it belongs to.
//!
//! 1. The loop receives records from one rdkafka queue and never waits for a sink: it
//!    keeps polling, so a slow sink cannot push the consumer out of its group.
//! 2. Each record is copied once (into buffers the workers gave back) and queued for its
//!    partition's worker; after each record the loop takes whatever else the client has
//!    ready (up to [`MAX_BATCH`] records), then hands each partition its records at once.
//! 3. Queues are bounded in bytes ([`flow`](super::flow)): a partition over its share is
//!    paused in the client and resumed with hysteresis.
//! 4. A fatal condition ([`fatal`](super::fatal)) ends the loop with an error, after the
//!    same orderly shutdown as the shutdown future.
//! 5. Every [`CLUSTER_CHECK_EVERY`] the client is asked for a subscribed topic's metadata,
//!    and given its bootstrap servers back when no answer comes ([`crate::rebootstrap`]):
//!    librdkafka can leave a consumer with no broker at all after one was fenced for a
//!    moment, and such a consumer received nothing again, silently.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::TopicPartitionList;

use super::closer::{Closed, Closer};
use super::context::{Context, Shared};
use super::dead_letter::Letters;
use super::flow::Budget;
use super::health::ConsumerHealth;
use super::shutdown::{self, Stopping};
use super::sink::{Membership, Sink};
use super::worker::{Slot, Worker};
use super::observer::Observer;
use super::settings::{Settings, CONSUMER_DEFAULTS};
use super::{ConsumerError, RetryPolicy};
use crate::consumer::record::{Buffers, OwnedRecord, Recycler};
use crate::admin;
use crate::KafkaConfig;

/// Most records taken from the client before they are handed to the workers.
pub const MAX_BATCH: usize = 512;

/// A consumer group member feeding a [`Sink`]: see the [module docs](super).
pub struct Runtime<S: Sink> {
    /// Declared first, so dropped before the client: see [`Abandoned`].
    _abandoned: Abandoned,
    consumer: Arc<Closer<StreamConsumer<Context<S>>>>,
    /// Completes once the client is closed (see [`Closer`]).
    closed: Closed,
    shared: Arc<Shared>,
    sink: Arc<S>,
    /// Subscribed topics; the name is shared with every record of the topic.
    topics: HashSet<Arc<str>>,
    letters: Arc<dyn Letters>,
    /// Bytes queued for all workers.
    buffered: Arc<AtomicUsize>,
    /// Buffers of finished records, for the next ones.
    recycler: Arc<Recycler>,
    budget: Budget,
    retry: RetryPolicy,
    drain_timeout: Duration,
    health: Arc<ConsumerHealth>,
}

/// Marks the consumer as closing when a [`Runtime`] is dropped without its orderly
/// shutdown (its `run` future dropped, say with the tokio runtime it ran on). The client
/// then closes when its last holder lets go, possibly a worker task being dropped by the
/// tokio runtime's own shutdown, on a thread of its own ([`Closer`]); closing runs the
/// revocation, which must not wait for workers that no tokio runtime will run again. Nothing is lost: unstored offsets are simply
/// not committed, and the next owner processes those records again.
struct Abandoned(Arc<Shared>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
    }
}

impl<S: Sink> Runtime<S> {
    /// Creates the client and subscribes. Needs tokio's multi-threaded runtime (see the
    /// [module docs](super#threads)).
    pub fn new(config: &KafkaConfig, settings: Settings, sink: S, letters: Arc<dyn Letters>) -> Result<Self, ConsumerError> {
        super::require_multi_thread()?;
        if settings.topics.is_empty() {
            return Err(ConsumerError::NothingSubscribed);
        }
        let health = Arc::new(ConsumerHealth::default());
        let shared = Arc::new(Shared::new(settings.revoke_timeout, sink.offsets(), health.clone()));
        let mut client_config = config.client_config(CONSUMER_DEFAULTS);
        for (k, v) in &settings.properties {
            client_config.set(k, v);
        }
        // Not negotiable: offsets are stored after the work (by the runtime or the sink),
        // and librdkafka's auto-commit commits them periodically and on revocation.
        client_config.set("group.id", &settings.group).set("enable.auto.offset.store", "false").set("enable.auto.commit", "true");
        let sink = Arc::new(sink);
        let consumer = StreamConsumer::from_config_and_context(&client_config, Context { shared: shared.clone(), sink: sink.clone() })?;
        let (consumer, closed) = Closer::new(consumer);
        let consumer = Arc::new(consumer);
        let (weak, weak_too) = (Arc::downgrade(&consumer), Arc::downgrade(&consumer));
        sink.attach(Membership::new(move || weak.upgrade().and_then(|c| c.group_metadata()), move |partitions, timeout| committed(&weak_too, partitions, timeout)));
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Runtime {
            _abandoned: Abandoned(shared.clone()),
            consumer,
            closed,
            shared,
            sink,
            topics: settings.topics.iter().map(|t| Arc::from(t.as_str())).collect(),
            letters,
            buffered: Arc::new(AtomicUsize::new(0)),
            recycler: Arc::default(),
            budget: Budget::new(settings.max_buffered_bytes),
            retry: settings.retry,
            drain_timeout: settings.drain_timeout,
            health,
        })
    }

    /// Live state for health checks.
    pub fn health(&self) -> Arc<ConsumerHealth> {
        self.health.clone()
    }

    /// A view of the partitions' queues, for status pages.
    pub fn observer(&self) -> Observer {
        Observer { shared: Arc::downgrade(&self.shared) }
    }

    /// Consumes until `shutdown` completes, then shuts down in order (see
    /// [`shutdown`]). Returns an error, after the same orderly shutdown,
    /// when a fatal condition ends the consumer ([`ConsumerError::is_fatal`]).
    ///
    /// Not cancellation-safe: dropping the future skips the orderly shutdown (records
    /// finished since the last commit are processed again by the next owner).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        self.health.set_running(true);
        tokio::pin!(shutdown);
        let mut refill = tokio::time::interval(Duration::from_millis(5));
        refill.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checks = tokio::time::interval(Duration::from_millis(200));
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let checking = Arc::new(AtomicBool::new(false));
        let asking_cluster = Arc::new(AtomicBool::new(false));
        let mut cluster_asked = Instant::now();
        let mut any_paused = false;
        // Buffers for the next records, reused from records the workers finished.
        let mut spare = Vec::with_capacity(MAX_BATCH);
        let fatal = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break None,
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
                _ = checks.tick() => {
                    if let Some(error) = self.shared.take_fatal() {
                        break Some(error);
                    }
                    self.find_ended_workers();
                    if self.shared.unknown_topic.swap(false, Ordering::AcqRel) && !checking.swap(true, Ordering::AcqRel) {
                        self.check_topics(checking.clone());
                    }
                    if cluster_asked.elapsed() >= CLUSTER_CHECK_EVERY && !asking_cluster.swap(true, Ordering::AcqRel) {
                        cluster_asked = Instant::now();
                        self.check_cluster(asking_cluster.clone());
                    }
                }
            }
        };
        self.shutdown().await;
        fatal.map_or(Ok(()), Err)
    }

    /// A client error said a topic is unknown: find out, off the async workers, whether a
    /// topic this consumer read was deleted.
    fn check_topics(&self, checking: Arc<AtomicBool>) {
        let read: Vec<String> = self.shared.read_topics.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let (consumer, shared) = (self.consumer.clone(), self.shared.clone());
        tokio::task::spawn_blocking(move || {
            for topic in read {
                if admin::topic_gone(consumer.client(), &topic, Duration::from_secs(10)) {
                    shared.set_fatal(ConsumerError::TopicDeleted(topic));
                }
            }
            checking.store(false, Ordering::Release);
        });
    }

    /// Asks the cluster for a subscribed topic's metadata, off the async workers, and gives
    /// the client its bootstrap servers back when no answer comes (point 5 of the
    /// [module docs](self)).
    fn check_cluster(&self, asking: Arc<AtomicBool>) {
        let Some(topic) = self.topics.iter().next().map(|t| t.to_string()) else { return };
        let (consumer, health) = (self.consumer.clone(), self.health.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::rebootstrap::check(consumer.client(), &topic, CLUSTER_CHECK_EVERY) {
                health.record_error(format!("no metadata from the cluster within {CLUSTER_CHECK_EVERY:?}: {e}"));
            }
            asking.store(false, Ordering::Release);
        });
    }

    /// Takes one result of the client. Returns true if a partition is paused.
    fn receive(&self, received: Result<BorrowedMessage<'_>, KafkaError>, spare: &mut Vec<Buffers>) -> bool {
        match received {
            Ok(msg) => self.dispatch(&msg, spare.pop().unwrap_or_default()),
            Err(KafkaError::PartitionEOF(partition)) => {
                // One topic per EOF-watching sink: rdkafka does not say which topic.
                let fetched = self.shared.lock().values().find_map(|slots| slots.get(&partition).map(|s| s.next_offset));
                self.sink.on_partition_eof(partition, fetched);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                self.health.record_error(e.to_string());
                self.shared.client_error(&e, "");
                false
            }
        }
    }

    /// Sends each worker the records received for it since the last hand-off.
    fn hand_off(&self) {
        let mut partitions = self.shared.lock();
        for (topic, slots) in partitions.iter_mut() {
            for (partition, slot) in slots.iter_mut() {
                if slot.pending.is_empty() {
                    continue;
                }
                let batch = std::mem::replace(&mut slot.pending, self.recycler.batch());
                slot.records.fetch_add(batch.len(), Ordering::AcqRel);
                if let Err(returned) = slot.tx.send(batch) {
                    slot.records.fetch_sub(returned.0.len(), Ordering::AcqRel);
                    // The worker is gone. Its exit gave back the bytes it held then; what
                    // was queued for it since is what its count holds now. (Taking the
                    // batch's size here counted bytes twice, the total wrapped below zero,
                    // and every partition of the consumer stayed paused.)
                    let stale = slot.bytes.swap(0, Ordering::AcqRel);
                    self.buffered.fetch_sub(stale, Ordering::AcqRel);
                    if !slot.ended && !slot.cancel.is_cancelled() {
                        self.ended_unexpectedly(topic, *partition, slot);
                    }
                }
            }
        }
    }

    /// Parks the partitions whose workers ended without being stopped, also when no record
    /// arrived for them since (see [`Runtime::ended_unexpectedly`]).
    fn find_ended_workers(&self) {
        let mut partitions = self.shared.lock();
        for (topic, slots) in partitions.iter_mut() {
            for (partition, slot) in slots.iter_mut() {
                if !slot.ended && slot.task.is_finished() && !slot.cancel.is_cancelled() {
                    // Records queued since its exit (its exit gave back what it held then).
                    let stale = slot.bytes.swap(0, Ordering::AcqRel);
                    self.buffered.fetch_sub(stale, Ordering::AcqRel);
                    slot.pending.clear();
                    self.ended_unexpectedly(topic, *partition, slot);
                }
            }
        }
    }

    /// A worker ended without being stopped (a panic in a sink outside the handler's
    /// guard, a sink that gave up): its partition would be fetched and its records dropped
    /// for the rest of the session while health said all is well. It is paused and parked
    /// (unhealthy, with the reason) until revoked; its unfinished records are processed
    /// again by the next owner.
    fn ended_unexpectedly(&self, topic: &str, partition: i32, slot: &mut Slot) {
        slot.ended = true;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(topic, partition, error = %e, "cannot pause partition");
        }
        let reason = "the partition's worker ended unexpectedly (see the log): paused until the partition is revoked or the consumer restarts";
        tracing::error!(topic, partition, "{reason}");
        metrics::counter!("herald_consumer_parked_total", "topic" => topic.to_owned()).increment(1);
        self.health.park(topic, partition, reason.to_owned());
    }

    /// Queues a record for its partition's worker (sent by [`Runtime::hand_off`]), copied
    /// into `buffers`. Returns true if the partition is paused.
    fn dispatch(&self, msg: &BorrowedMessage<'_>, buffers: Buffers) -> bool {
        let topic = msg.topic();
        let (partition, offset) = (msg.partition(), msg.offset());
        let mut partitions = self.shared.lock();
        let topic_slots = match partitions.get_mut(topic) {
            Some(slots) => slots,
            None if self.topics.contains(topic) => partitions.entry(topic.to_owned()).or_default(),
            None => {
                tracing::error!(topic, "record from a topic not subscribed");
                return false;
            }
        };
        let slot = match topic_slots.entry(partition) {
            std::collections::hash_map::Entry::Occupied(slot) => slot.into_mut(),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                // A partition's first record: its slot keeps the shared topic name.
                let Some(topic_name) = self.topics.get(topic) else { return false };
                let Some(sink) = self.sink.open(topic_name, partition) else {
                    tracing::error!(topic, "record from a topic without sink");
                    return false;
                };
                let worker = Worker {
                    sink,
                    letters: self.letters.clone(),
                    client: self.consumer.clone(),
                    offsets: self.shared.offsets,
                    retry: self.retry,
                    health: self.health.clone(),
                    total: self.buffered.clone(),
                    recycler: self.recycler.clone(),
                    topic: topic_name.clone(),
                    partition,
                    waiting: Arc::default(),
                };
                vacant.insert(worker.spawn(offset))
            }
        };
        if offset < slot.next_offset {
            return slot.paused; // Already queued: re-fetched after a resume.
        }
        slot.next_offset = offset + 1;
        let record = OwnedRecord::copy_into(msg, &slot.topic, buffers);
        let size = record.footprint();
        let own = slot.bytes.fetch_add(size, Ordering::AcqRel) + size;
        let total = self.buffered.fetch_add(size, Ordering::AcqRel) + size;
        if !slot.paused && self.budget.should_pause(own, total) {
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

    /// Resumes paused partitions that [`Budget::may_resume`]. Returns true while some
    /// partition stays paused.
    fn refill(&self) -> bool {
        let mut partitions = self.shared.lock();
        let total = self.buffered.load(Ordering::Acquire);
        let mut still_paused = false;
        let mut resumed = Vec::new();
        for (topic, slots) in partitions.iter_mut() {
            for (partition, slot) in slots.iter_mut().filter(|(_, s)| s.paused && !s.ended) {
                if self.budget.may_resume(slot.bytes.load(Ordering::Acquire), total) {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(topic, *partition);
                    match self.consumer.resume(&tpl) {
                        Ok(()) => {
                            slot.paused = false;
                            resumed.push((topic.clone(), *partition));
                        }
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
        if !resumed.is_empty() {
            self.wake_fetchers(resumed);
        }
        still_paused
    }

    /// Makes librdkafka fetch resumed partitions now rather than in up to a second.
    ///
    /// librdkafka applies a resume on its main thread and does not wake the broker thread
    /// that fetches the partition: when every partition it serves was paused, that thread
    /// sleeps in its 1 s wait for I/O, and the resumed partition is fetched only when the
    /// wait ends (the same shows in confluent-kafka-go#630's logs: resume, then "fetch
    /// decide" 550 ms later). A consumer whose workers fall behind pauses every partition
    /// at once (the budget is shared), so each pause cost it 0.3-0.8 s with nothing to do:
    /// the SQLite projector bench spent a third of its time so. Any request to the
    /// partition's leader wakes its broker thread; a watermark query is the lightest one
    /// aimed at exactly that broker. Off the async workers (it waits for the answer), its
    /// result not needed, and all of it within a second, so that a broker that does not
    /// answer keeps the client alive no longer than that after a shutdown.
    fn wake_fetchers(&self, resumed: Vec<(String, i32)>) {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(1);
            for (topic, partition) in resumed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if let Err(e) = consumer.fetch_watermarks(&topic, partition, left) {
                    tracing::debug!(topic, partition, error = %e, "watermark query after a resume failed; the fetch starts within a second");
                }
            }
        });
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
        // Dropping the queue senders lets workers finish what they hold, then exit.
        let mut progress = Vec::with_capacity(slots.len());
        let mut stopping = Vec::with_capacity(slots.len());
        for (key, slot) in slots {
            let super::worker::Slot { tx, cancel, task, progress: p, waiting, .. } = slot;
            drop(tx);
            // It would hold the drain for its whole timeout, finishing nothing more: it
            // stops now (its record is processed again by the next owner).
            if waiting.load(Ordering::Acquire) {
                cancel.cancel();
            }
            progress.push((key, p));
            stopping.push(Stopping { cancel, task });
        }
        let drained = shutdown::drain(stopping, self.drain_timeout).await;
        if drained.aborted > 0 {
            tracing::warn!(aborted = drained.aborted, "workers still busy after the drain: aborted; their records are processed again");
        }
        if self.shared.offsets.stored_in_group() {
            // Aborted workers could not store what they finished before.
            for ((topic, partition), p) in &progress {
                if let Some(done) = p.completed()
                    && let Err(e) = self.consumer.store_offset(topic, *partition, done)
                {
                    tracing::debug!(topic, partition, error = %e, "offset not stored at shutdown");
                }
            }
        }
        let consumer = self.consumer.clone();
        match off_runtime(FINAL_COMMIT_TIMEOUT, move || consumer.commit_consumer_state(CommitMode::Sync)).await {
            Some(Ok(())) | Some(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "final commit failed"),
            None => tracing::warn!(
                timeout_s = FINAL_COMMIT_TIMEOUT.as_secs(),
                "final commit not done in time (is the broker reachable?): the records finished since the last commit are processed again by the next owner"
            ),
        }
        self.letters.flush().await;
        self.health.set_running(false);
        self.shared.closing.store(true, Ordering::Release);
        // Closing leaves the group; it can block as long as the commit.
        let consumer = self.consumer;
        drop(self.sink);
        let left = tokio::time::timeout(CLOSE_TIMEOUT, async move {
            off_runtime(CLOSE_TIMEOUT, move || consumer.unsubscribe()).await;
            self.closed.wait().await;
        })
        .await;
        if left.is_err() {
            tracing::warn!(timeout_s = CLOSE_TIMEOUT.as_secs(), "leaving the group not done in time: the group rebalances after the session timeout instead");
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "consumer stopped");
    }
}

/// Longest wait for the final commit at shutdown: long enough for a rebalance held up by
/// a member that died without leaving in most groups (librdkafka's default session timeout
/// is 45 s, less the time it already ran), short enough that a broker gone for good does
/// not keep the process from stopping.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the cluster is asked whether it still answers the client (and longest wait).
pub const CLUSTER_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for leaving the group at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `work` on a thread of its own and waits for it at most `limit` (`None`: not done
/// in time). For librdkafka calls that wait for a group coordinator without a deadline:
/// the synchronous commit and the consumer's close, while no broker answers
/// (librdkafka#3740). Such a call left on tokio's blocking pool would keep the tokio
/// runtime, and so the program, from ever ending; a thread of its own does not, and it
/// ends with the process.
async fn off_runtime<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("herald-consumer-stop".into()).spawn(move || {
        let _ = tx.send(work());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to stop the consumer");
        return None;
    }
    tokio::time::timeout(limit, rx).await.ok().and_then(Result::ok)
}

/// [`Membership::committed`]: the group's committed offsets of `partitions`, asked of the
/// broker by the consumer itself (its `isolation.level` decides whether the broker waits
/// for pending transactional offsets).
fn committed(consumer: &std::sync::Weak<Closer<StreamConsumer<Context<impl Sink>>>>, partitions: &[(String, i32)], timeout: Duration) -> Result<Vec<Option<i64>>, KafkaError> {
    let consumer = consumer.upgrade().ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    let answer = consumer.committed_offsets(tpl, timeout)?;
    partitions
        .iter()
        .map(|(topic, partition)| {
            let element = answer.find_partition(topic, *partition).ok_or(KafkaError::Global(RDKafkaErrorCode::UnknownPartition))?;
            element.error()?;
            Ok(match element.offset() {
                rdkafka::Offset::Offset(next) => Some(next),
                _ => None,
            })
        })
        .collect()
}
