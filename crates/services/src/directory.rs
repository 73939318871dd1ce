//! Discovery: a live map of the registry topic, read from the beginning and followed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herald_bus::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::instance::now_ms;
use crate::table::{Entry, Table};
use crate::{Balancer, Instance, Lease, RegistryError, Settings};

/// How long an expired instance stays listed (as expired) before the directory forgets it.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// How often the directory asks whether it can read the registry topic (see
/// [`RegistryClock`]).
pub const REACHABLE_EVERY: Duration = Duration::from_secs(1);

/// The table and the clock its ages are measured on.
#[derive(Debug)]
struct State {
    table: Table,
    clock: RegistryClock,
}

/// The clock instances' ages are measured on: it runs only while the directory reads the
/// registry topic. A heartbeat the directory cannot read (the broker away) says nothing of
/// its instance; measured on the wall clock, every instance expired a TTL into a broker's
/// outage, and a gateway answered "no live instance" for a view that was up all along (an
/// outside probe saw it). Once the topic is read again the clock goes on from where it
/// stopped, so an instance has the rest of its TTL to heartbeat again, and one that died
/// meanwhile expires then. "Reads" means both that the broker answers for the topic and
/// that the directory's consumer got at least as far as each partition's end was at the
/// previous look ([`read_up_to`]): a consumer that stopped fetching while the broker
/// answers would see no heartbeat either.
#[derive(Debug)]
struct RegistryClock {
    origin: Instant,
    visible: Duration,
    last: Instant,
    reachable: bool,
}

impl RegistryClock {
    fn new(now: Instant) -> Self {
        RegistryClock { origin: now, visible: Duration::ZERO, last: now, reachable: true }
    }

    /// The clock's time at `now`.
    fn at(&mut self, now: Instant) -> Instant {
        if self.reachable {
            self.visible += now.saturating_duration_since(self.last);
        }
        self.last = now;
        self.origin + self.visible
    }

    /// Whether the topic could be read, as found at `now`.
    fn set_reachable(&mut self, reachable: bool, now: Instant) {
        self.at(now);
        self.reachable = reachable;
    }
}

impl State {
    fn now(&mut self) -> Instant {
        self.clock.at(Instant::now())
    }
}

/// The instances registered on the registry topic, kept up to date by a background task.
///
/// ```no_run
/// # async fn demo() -> Result<(), herald_services::RegistryError> {
/// use std::time::Duration;
/// use herald_bus::KafkaConfig;
/// use herald_services::{Balancer, Directory, Settings, Strategy};
/// let directory = Directory::start(&KafkaConfig::new("127.0.0.1:9092"), &Settings::default()).await?;
/// directory.caught_up(Duration::from_secs(10)).await;
/// let balancer = Balancer::new(Strategy::ConsistentHash);
/// if let Some(lease) = directory.pick(&balancer, "order-status", Some(b"order-42")) {
///     println!("ask {}", lease.instance().address);
///     lease.succeeded();
/// }
/// directory.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Directory {
    state: Arc<Mutex<State>>,
    caught_up: watch::Receiver<bool>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Directory {
    /// Creates the registry topic if missing and starts reading it from the beginning (no
    /// consumer group: every directory reads everything). Must be called inside a tokio
    /// runtime.
    pub async fn start(config: &KafkaConfig, settings: &Settings) -> Result<Self, RegistryError> {
        crate::topic::ensure_topic(config, &settings.topic).await?;
        let partitions = herald_bus::admin::partition_count(config, &settings.topic).await?.unwrap_or(1);
        let consumer: StreamConsumer<QuietEof> = config
            .client_config(&[
                ("group.id", "herald.services.directory"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
            ])
            .create_with_context(QuietEof)?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(&settings.topic, p as i32, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        // Where "caught up" is: the end of each partition now. (Partition EOF alone is not
        // enough: while instances heartbeat, fetches keep returning records and librdkafka
        // may never report the end.)
        let topic = settings.topic.clone();
        let ends = tokio::task::spawn_blocking(move || -> Result<(StreamConsumer<QuietEof>, Vec<i64>), KafkaError> {
            let ends = (0..partitions as i32).map(|p| consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).map(|(_, high)| high)).collect::<Result<_, _>>()?;
            Ok((consumer, ends))
        })
        .await
        .map_err(|_| KafkaError::Canceled)?;
        let (consumer, ends) = ends?;
        let state = Arc::new(Mutex::new(State { table: Table::new(settings.ttl), clock: RegistryClock::new(Instant::now()) }));
        let (caught_up_tx, caught_up) = watch::channel(false);
        let stop = CancellationToken::new();
        let consumer = Arc::new(consumer);
        tokio::spawn(watch_reachable(consumer.clone(), settings.topic.clone(), partitions as i32, state.clone(), stop.clone()));
        let task = tokio::spawn(follow(consumer, ends, state.clone(), caught_up_tx, stop.clone()));
        Ok(Directory { state, caught_up, stop, task: Some(task) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the directory has read every record that was on the topic when it
    /// started (at most `timeout`); true if it has. Cancellation-safe.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let mut rx = self.caught_up.clone();
        tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await.is_ok_and(|r| r.is_ok())
    }

    /// The live instances of `service`, ordered by instance id.
    pub fn live(&self, service: &str) -> Vec<Instance> {
        let mut state = self.state();
        let now = state.now();
        state.table.live(service, now)
    }

    /// Every instance known, live and expired, ordered by `service/instance`.
    pub fn entries(&self) -> Vec<Entry> {
        let mut state = self.state();
        let now = state.now();
        state.table.entries(now)
    }

    /// Picks a live instance of `service` with `balancer` (see [`Balancer::pick`]).
    pub fn pick(&self, balancer: &Balancer, service: &str, key: Option<&[u8]>) -> Option<Lease> {
        balancer.pick(&self.live(service), key)
    }

    /// Stops following the topic.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The directory's client context: the end of a partition, reported each time a
/// heartbeat was read (every few seconds per instance), is not an error worth a log line;
/// every other client error is logged as rdkafka's default does.
pub(crate) struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => tracing::trace!(reason, "registry partition end"),
            _ => tracing::error!("librdkafka: {error}: {reason}"),
        }
    }
}

impl ConsumerContext for QuietEof {}

/// Looks every [`REACHABLE_EVERY`] whether the directory reads the registry topic, for the
/// [`RegistryClock`]: the broker gives each partition's end (its high watermark), and the
/// consumer's positions are at least the ends of the previous look ([`read_up_to`]).
async fn watch_reachable(consumer: Arc<StreamConsumer<QuietEof>>, topic: String, partitions: i32, state: Arc<Mutex<State>>, stop: CancellationToken) {
    let mut every = tokio::time::interval(REACHABLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ends_before: Option<Vec<i64>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let (asking, topic) = (consumer.clone(), topic.clone());
        let looked = tokio::task::spawn_blocking(move || {
            let ends = (0..partitions).map(|p| asking.fetch_watermarks(&topic, p, Duration::from_secs(2)).map(|(_, high)| high)).collect::<Result<Vec<i64>, _>>().ok();
            let positions = asking.position().map(|list| (0..partitions).map(|p| list.find_partition(&topic, p).and_then(|e| offset_of(e.offset()))).collect::<Vec<_>>());
            (ends, positions.ok())
        })
        .await
        .unwrap_or((None, None));
        let reachable = match looked {
            (Some(ends), Some(positions)) => {
                let reading = ends_before.as_deref().is_none_or(|before| read_up_to(&positions, before));
                if !reading {
                    tracing::warn!(?positions, ends = ?ends_before, "the registry's consumer is behind where the topic ended a second ago: instances' ages are not counted until it reads again");
                }
                ends_before = Some(ends);
                reading
            }
            _ => false,
        };
        state.lock().unwrap_or_else(|p| p.into_inner()).clock.set_reachable(reachable, Instant::now());
    }
}

/// An offset's number, if it is one (not "beginning", "end", "invalid").
fn offset_of(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(n) => Some(n),
        _ => None,
    }
}

/// Whether the consumer read each partition up to `ends` (its next offset at least the
/// end; a partition it has not fetched from yet counts only when it was empty).
fn read_up_to(positions: &[Option<i64>], ends: &[i64]) -> bool {
    ends.iter().enumerate().all(|(p, &end)| end <= 0 || positions.get(p).copied().flatten().is_some_and(|next| next >= end))
}

async fn follow(consumer: Arc<StreamConsumer<QuietEof>>, ends: Vec<i64>, table: Arc<Mutex<State>>, caught_up: watch::Sender<bool>, stop: CancellationToken) {
    // Partitions whose end (as of the start) has been read.
    let mut at_end: HashSet<i32> = (0..ends.len() as i32).filter(|&p| ends[p as usize] <= 0).collect();
    let partitions = ends.len();
    if at_end.len() >= partitions {
        caught_up.send_replace(true);
    }
    let mut forget = tokio::time::interval(Duration::from_secs(60));
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            _ = forget.tick() => {
                let mut state = table.lock().unwrap_or_else(|p| p.into_inner());
                let now = state.now();
                state.table.forget_expired(now, FORGET_AFTER);
                continue;
            }
            r = consumer.recv() => r,
        };
        match received {
            Ok(message) => {
                apply(&table, &message);
                let p = message.partition();
                if ends.get(p as usize).is_some_and(|&end| message.offset() + 1 >= end) && at_end.insert(p) && at_end.len() >= partitions {
                    caught_up.send_replace(true);
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if at_end.len() >= partitions {
                    caught_up.send_replace(true);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the registry topic");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// Applies one record to the table; a record that is not an instance record is logged and
/// skipped (it stays on the topic, untouched).
fn apply(table: &Mutex<State>, message: &rdkafka::message::BorrowedMessage<'_>) {
    let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        tracing::warn!(offset = message.offset(), "registry record without a UTF-8 key skipped");
        return;
    };
    let record = match message.payload().map(Instance::decode) {
        None => None,
        Some(Ok(instance)) if instance.key() == key => Some(instance),
        Some(Ok(instance)) => {
            tracing::warn!(key, offset = message.offset(), record = %instance.key(), "registry record under another instance's key skipped");
            return;
        }
        Some(Err(e)) => {
            tracing::warn!(key, offset = message.offset(), error = %e, "registry record skipped");
            return;
        }
    };
    let mut state = table.lock().unwrap_or_else(|p| p.into_inner());
    let now = state.now();
    state.table.apply(key, record, now, now_ms());
}

#[cfg(test)]
mod tests {
    use super::read_up_to;

    #[test]
    fn read_up_to_wants_every_partition_at_or_past_its_earlier_end() {
        assert!(read_up_to(&[Some(10), Some(3)], &[10, 2]), "caught up");
        assert!(!read_up_to(&[Some(9), Some(3)], &[10, 2]), "one partition behind");
        assert!(!read_up_to(&[None, Some(3)], &[10, 2]), "a partition never fetched, with records");
        assert!(read_up_to(&[None, Some(3)], &[0, 2]), "a partition never fetched, empty");
        assert!(!read_up_to(&[Some(10)], &[10, 2]), "a partition missing from the positions");
    }
}
