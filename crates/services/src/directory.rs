//! Discovery: a live map of the registry topic, read from the beginning and followed.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herald_bus::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
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

/// How often, at most, the directory looks how far it has read the registry topic; it
/// looks every eighth of the TTL when that is shorter. Instances' ages count only time up
/// to which a look found every record read (see the crate's guarantees).
pub const REACHABLE_EVERY: Duration = Duration::from_secs(1);

/// How long the directory's consumer may go without reading (behind the registry topic's
/// end without moving, or unable to ask the broker) before the directory replaces it by
/// a new one that goes on after the last record read: librdkafka's consumer sometimes
/// stays stuck after a broker restart.
pub const STALLED_AFTER: Duration = Duration::from_secs(5);

/// The table and the clock its ages are measured on.
#[derive(Debug)]
struct State {
    table: Table,
    clock: RegistryClock,
}

impl State {
    fn now(&self) -> Instant {
        self.clock.now
    }
}

/// The clock instances' ages are measured on: it counts only time up to which the
/// directory is known to have read every record written to the registry topic. A
/// heartbeat the directory cannot read (the broker away, its consumer stalled) says
/// nothing of its instance; measured on the wall clock, every instance expired a TTL into
/// a broker's outage, and a gateway answered "no live instance" for a view that was up all
/// along (an outside probe saw it).
///
/// Each look asks the broker for each partition's end and the consumer for its position
/// (see `Reader::ask`). When a look finds the consumer at or past the ends an earlier look
/// saw, everything written before that earlier look has been read, and the time up to it
/// is counted: the intervals between the looks since the last one counted, but not an
/// interval across a look the broker did not answer. So the clock stands still through an
/// outage (even before a look notices it) and goes on from where it stood once the topic
/// is read again: an instance has the rest of its TTL to heartbeat again, and one that died
/// meanwhile expires then. A consumer always a little behind still counts time, a look or
/// two late.
///
/// A record read is stamped with the time not yet confirmed (the counted time plus the
/// uncounted intervals since, outages left out), so its age stays at zero until the clock
/// passes it: an instance expires once the clock counted a TTL after its last heartbeat
/// was read, never before, and at most a look or two after.
#[derive(Debug)]
struct RegistryClock {
    /// The counted time: since the directory started, up to the last look counted.
    now: Instant,
    /// When the last look counted began, unless the broker missed a look since.
    base: Option<Instant>,
    /// The looks since, oldest first: a look's ends and when it began, or `None` for a look
    /// the broker did not answer.
    looks: VecDeque<Option<(Vec<i64>, Instant)>>,
}

/// How many looks the clock keeps waiting for the consumer to read past their ends; past
/// that, the oldest are dropped uncounted.
const KEPT_LOOKS: usize = 64;

impl RegistryClock {
    fn new(now: Instant, ends: Vec<i64>) -> Self {
        RegistryClock { now, base: None, looks: VecDeque::from([Some((ends, now))]) }
    }

    /// The time between looks from `base` through the first `count` kept looks, outages
    /// left out, and when the last of them began (`None` after an unanswered one).
    fn span(&self, count: usize) -> (Duration, Option<Instant>) {
        let mut base = self.base;
        let mut span = Duration::ZERO;
        for look in self.looks.iter().take(count) {
            match look {
                Some((_, at)) => {
                    span += base.map_or(Duration::ZERO, |b| at.saturating_duration_since(b));
                    base = Some(*at);
                }
                None => base = None,
            }
        }
        (span, base)
    }

    /// A look begun at `at`: the partitions' ends and the consumer's positions, or `None`
    /// if the broker did not answer.
    fn looked(&mut self, at: Instant, seen: Option<(Vec<i64>, Vec<Option<i64>>)>) {
        let Some((ends, positions)) = seen else {
            if self.looks.back().is_none_or(Option::is_some) {
                self.looks.push_back(None);
            }
            return;
        };
        if let Some(read) = self.looks.iter().rposition(|look| look.as_ref().is_some_and(|(ends, _)| read_up_to(&positions, ends))) {
            let (span, base) = self.span(read + 1);
            self.now += span;
            self.base = base;
            self.looks.drain(..=read);
        }
        self.looks.push_back(Some((ends, at)));
        while self.looks.len() > KEPT_LOOKS {
            self.looks.pop_front();
            self.base = None;
        }
    }

    /// The time to stamp a record read at `real`: the counted time plus what is not
    /// counted yet.
    fn stamp(&self, real: Instant) -> Instant {
        let (span, base) = self.span(self.looks.len());
        self.now + span + base.map_or(Duration::ZERO, |b| real.saturating_duration_since(b))
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
        let reader = Reader::open(config.clone(), settings.topic.clone(), vec![None; partitions as usize])?;
        // Where "caught up" is: the end of each partition now. (Partition EOF alone is not
        // enough: while instances heartbeat, fetches keep returning records and librdkafka
        // may never report the end.)
        let consumer = reader.consumer.clone();
        let topic = settings.topic.clone();
        let ends = tokio::task::spawn_blocking(move || ends_of(&consumer, &topic, partitions as i32, Duration::from_secs(10)))
        .await
        .map_err(|_| KafkaError::Canceled)??;
        let every = REACHABLE_EVERY.min(settings.ttl / 8).max(Duration::from_millis(10));
        let state = Arc::new(Mutex::new(State { table: Table::new(settings.ttl), clock: RegistryClock::new(Instant::now(), ends.clone()) }));
        let (caught_up_tx, caught_up) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(reader, ends, every, state.clone(), caught_up_tx, stop.clone()));
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
        let state = self.state();
        state.table.live(service, state.now())
    }

    /// Every instance known, live and expired, ordered by `service/instance`.
    pub fn entries(&self) -> Vec<Entry> {
        let state = self.state();
        state.table.entries(state.now())
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

/// One look at how far the directory's consumer has read: when it began, and the
/// partitions' ends and the consumer's positions, or `None` if the broker did not answer.
struct Look {
    at: Instant,
    seen: Option<(Vec<i64>, Vec<Option<i64>>)>,
}

/// The directory's consumer of the registry topic, and what the directory needs to
/// replace it: librdkafka's consumer of an assigned partition sometimes stops fetching
/// after a broker restart while the broker is up again (librdkafka #5153, rust-rdkafka
/// #597; CI runs here saw it, and a client that kept the partition's leader unknown after
/// the restart), and only a new consumer reads again.
struct Reader {
    config: KafkaConfig,
    topic: String,
    consumer: Arc<StreamConsumer<QuietEof>>,
    /// Per partition, the offset after the last record read.
    next: Vec<Option<i64>>,
    /// The partitions' ends at the last look the broker answered.
    ends: Option<Vec<i64>>,
    /// Per partition behind those ends: since when it has stood at which position.
    standing: Vec<Option<(Option<i64>, Instant)>>,
    /// Since when the broker has not answered this consumer's client, and how long to
    /// wait then before replacing it (doubling while it stays unanswered: during an outage
    /// a new client cannot help).
    unanswered: Option<(Instant, Duration)>,
    /// Whether a look found it stalled: replaced by [`Reader::replace_if_stalled`].
    stalled: bool,
    /// How long it may stand still before it is replaced.
    stalled_after: Duration,
}

/// The longest wait before replacing a consumer whose client the broker does not answer.
const UNANSWERED_AT_MOST: Duration = Duration::from_secs(60);

impl Reader {
    /// A consumer assigned every partition from `next` (the beginning where `None`).
    fn open(config: KafkaConfig, topic: String, next: Vec<Option<i64>>) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer<QuietEof> = config
            .client_config(&[
                ("group.id", "herald.services.directory"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
            ])
            .create_with_context(QuietEof)?;
        let mut assignment = TopicPartitionList::new();
        for (p, from) in next.iter().enumerate() {
            assignment.add_partition_offset(&topic, p as i32, from.map_or(Offset::Beginning, Offset::Offset))?;
        }
        consumer.assign(&assignment)?;
        let standing = vec![None; next.len()];
        Ok(Reader { config, topic, consumer: Arc::new(consumer), next, ends: None, standing, unanswered: None, stalled: false, stalled_after: STALLED_AFTER })
    }

    /// Notes `message` as read.
    fn read(&mut self, message: &impl Message) {
        if let Some(next) = self.next.get_mut(message.partition() as usize) {
            *next = Some(message.offset() + 1);
        }
    }

    /// Asks how far the consumer has read, for the [`RegistryClock`]: the broker gives each
    /// partition's end (its high watermark), the consumer its position. The answer comes
    /// on a blocking thread while the directory goes on reading: the broker answers this
    /// client's requests in order, so the ends may wait behind a fetch's long poll.
    fn ask(&self) -> JoinHandle<Look> {
        // Taken before asking: every record written before this instant is within the
        // ends the broker gives.
        let at = Instant::now();
        let (consumer, topic, partitions) = (self.consumer.clone(), self.topic.clone(), self.next.len() as i32);
        tokio::task::spawn_blocking(move || {
            let seen = (|| {
                let ends = ends_of(&consumer, &topic, partitions, Duration::from_secs(2)).ok()?;
                let positions = consumer.position().ok()?;
                Some((ends, (0..partitions).map(|p| positions.find_partition(&topic, p).and_then(|e| offset_of(e.offset()))).collect::<Vec<_>>()))
            })();
            Look { at, seen }
        })
    }

    /// Counts a look on the clock, and finds the consumer stalled when a partition has
    /// stood behind the ends of the look before for `stalled_after`, or when the broker has
    /// not answered its client for as long (then longer each time).
    fn looked(&mut self, Look { at, seen }: Look, clock: &Mutex<State>) {
        let seen = seen.map(|(ends, positions)| {
            // A new consumer has no position in a partition until it reads a record there;
            // what was read before it still counts.
            let positions: Vec<Option<i64>> = positions.iter().zip(&self.next).map(|(&position, &next)| position.max(next)).collect();
            (ends, positions)
        });
        match &seen {
            None => {
                let (since, wait) = *self.unanswered.get_or_insert((at, self.stalled_after));
                if at.saturating_duration_since(since) >= wait {
                    tracing::warn!("the broker has not answered the registry's consumer for {wait:?}: replacing it");
                    self.stalled = true;
                    self.unanswered = Some((at, (wait * 2).min(UNANSWERED_AT_MOST)));
                }
            }
            Some((ends, positions)) => {
                self.unanswered = None;
                for (p, standing) in self.standing.iter_mut().enumerate() {
                    let position = positions.get(p).copied().flatten();
                    let behind = self.ends.as_ref().and_then(|ends| ends.get(p)).is_some_and(|&end| position.unwrap_or(0) < end);
                    match standing {
                        _ if !behind => *standing = None,
                        Some((there, since)) if *there == position => {
                            if at.saturating_duration_since(*since) >= self.stalled_after {
                                tracing::warn!(partition = p, ?position, "the registry's consumer has not moved in a partition behind its end for {:?}: replacing it", self.stalled_after);
                                self.stalled = true;
                            }
                        }
                        _ => *standing = Some((position, at)),
                    }
                }
                self.ends = Some(ends.clone());
            }
        }
        clock.lock().unwrap_or_else(|p| p.into_inner()).clock.looked(at, seen);
    }

    /// Replaces the consumer, if a look found it stalled, by one that goes on after the
    /// last record read. Called where the reading loop holds no handle of its own on the
    /// consumer, so the stale one closes on a blocking thread (closing waits on
    /// librdkafka's threads).
    fn replace_if_stalled(&mut self) {
        if !std::mem::take(&mut self.stalled) {
            return;
        }
        match Reader::open(self.config.clone(), self.topic.clone(), self.next.clone()) {
            Ok(fresh) => {
                let stale = std::mem::replace(&mut self.consumer, fresh.consumer);
                tokio::task::spawn_blocking(move || drop(stale));
                self.standing.fill(None);
            }
            Err(e) => tracing::error!(error = %e, "replacing the registry's consumer; trying again after the next look"),
        }
    }
}

/// Each partition's end (its high watermark), asked of the broker (blocking).
fn ends_of(consumer: &StreamConsumer<QuietEof>, topic: &str, partitions: i32, timeout: Duration) -> Result<Vec<i64>, KafkaError> {
    (0..partitions).map(|p| consumer.fetch_watermarks(topic, p, timeout).map(|(_, high)| high)).collect()
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

/// What woke the reading loop.
enum Woken<T> {
    Stop,
    Forget,
    Look,
    Looked(Option<Look>),
    Received(T),
}

async fn follow(mut reader: Reader, ends: Vec<i64>, every: Duration, table: Arc<Mutex<State>>, caught_up: watch::Sender<bool>, stop: CancellationToken) {
    // Partitions whose end (as of the start) has been read.
    let mut at_end: HashSet<i32> = (0..ends.len() as i32).filter(|&p| ends[p as usize] <= 0).collect();
    let partitions = ends.len();
    if at_end.len() >= partitions {
        caught_up.send_replace(true);
    }
    let mut forget = tokio::time::interval(Duration::from_secs(60));
    let mut looks = tokio::time::interval_at(Instant::now() + every, every);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked: Option<JoinHandle<Look>> = None;
    loop {
        reader.replace_if_stalled();
        let consumer = reader.consumer.clone();
        let woken = tokio::select! {
            _ = stop.cancelled() => Woken::Stop,
            _ = forget.tick() => Woken::Forget,
            _ = looks.tick(), if asked.is_none() => Woken::Look,
            look = async { asked.as_mut()?.await.ok() }, if asked.is_some() => Woken::Looked(look),
            r = consumer.recv() => Woken::Received(r),
        };
        match woken {
            Woken::Stop => return,
            Woken::Forget => {
                let mut state = table.lock().unwrap_or_else(|p| p.into_inner());
                let now = state.now();
                state.table.forget_expired(now, FORGET_AFTER);
            }
            Woken::Look => asked = Some(reader.ask()),
            Woken::Looked(look) => {
                asked = None;
                if let Some(look) = look {
                    reader.looked(look, &table);
                }
            }
            Woken::Received(Ok(message)) => {
                apply(&table, &message);
                reader.read(&message);
                let p = message.partition();
                if ends.get(p as usize).is_some_and(|&end| message.offset() + 1 >= end) && at_end.insert(p) && at_end.len() >= partitions {
                    caught_up.send_replace(true);
                }
            }
            Woken::Received(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if at_end.len() >= partitions {
                    caught_up.send_replace(true);
                }
            }
            Woken::Received(Err(e)) => {
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
fn apply(table: &Mutex<State>, message: &BorrowedMessage<'_>) {
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
    let stamp = state.clock.stamp(Instant::now());
    state.table.apply(key, record, stamp, now_ms());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use std::sync::Mutex;

    use super::{read_up_to, Reader, RegistryClock, State};
    use crate::table::Table;

    #[test]
    fn the_clock_counts_only_time_up_to_which_everything_was_read() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut clock = RegistryClock::new(t0, vec![5]);
        clock.looked(t0 + s(1), Some((vec![7], vec![Some(5)])));
        assert_eq!(clock.now, t0, "read up to the start's end: nothing written after it is known read yet");
        clock.looked(t0 + s(2), Some((vec![9], vec![Some(7)])));
        assert_eq!(clock.now, t0 + s(1), "the first second is confirmed");
        assert_eq!(clock.stamp(t0 + Duration::from_millis(2_500)), t0 + Duration::from_millis(2_500), "a record read now is stamped with the time not yet counted");
        // The broker goes away: nothing is counted, not even the time since the last look.
        clock.looked(t0 + s(3), None);
        clock.looked(t0 + s(9), None);
        assert_eq!(clock.now, t0 + s(1));
        assert_eq!(clock.stamp(t0 + s(9)), t0 + s(2), "stamps stand still through the outage too");
        // Back: the interval before the outage is confirmed, nothing of the outage itself.
        clock.looked(t0 + s(10), Some((vec![12], vec![Some(9)])));
        assert_eq!(clock.now, t0 + s(2));
        clock.looked(t0 + s(11), Some((vec![14], vec![Some(12)])));
        assert_eq!(clock.now, t0 + s(2), "the first look after the outage begins the count again");
        // A consumer a look behind still counts time, a look late.
        clock.looked(t0 + s(12), Some((vec![16], vec![Some(13)])));
        assert_eq!(clock.now, t0 + s(2));
        clock.looked(t0 + s(13), Some((vec![18], vec![Some(16)])));
        assert_eq!(clock.now, t0 + s(4), "up to the look whose ends it read past");
        // Never more than real time, outages left out: stamps and the clock agree.
        assert_eq!(clock.stamp(t0 + s(13)), t0 + s(5));
    }

    #[test]
    fn read_up_to_wants_every_partition_at_or_past_its_earlier_end() {
        assert!(read_up_to(&[Some(10), Some(3)], &[10, 2]), "caught up");
        assert!(!read_up_to(&[Some(9), Some(3)], &[10, 2]), "one partition behind");
        assert!(!read_up_to(&[None, Some(3)], &[10, 2]), "a partition never fetched, with records");
        assert!(read_up_to(&[None, Some(3)], &[0, 2]), "a partition never fetched, empty");
        assert!(!read_up_to(&[Some(10)], &[10, 2]), "a partition missing from the positions");
    }

    impl Reader {
        async fn look(&mut self, clock: &Mutex<State>) {
            let look = self.ask().await.expect("the look's thread");
            self.looked(look, clock);
            self.replace_if_stalled();
        }
    }

    /// librdkafka's consumer sometimes stops fetching after a broker restart (it cannot
    /// be made to on purpose); a paused consumer stands still the same way. A reader that
    /// reads is left alone; one that stands still behind the end is replaced, and the new
    /// consumer goes on at the record after the last one read.
    #[tokio::test]
    async fn a_consumer_that_stands_still_behind_the_end_is_replaced_and_reading_goes_on() {
        use std::sync::Arc;

        use rdkafka::consumer::Consumer;
        use rdkafka::{Message, TopicPartitionList};

        let config = herald_testkit::kafka().await;
        let settings = crate::Settings::default().topic(herald_testkit::unique("t.services.stall")).heartbeat(Duration::from_millis(50));
        let instance = crate::Instance::new("orders", "a", "http://127.0.0.1/a", "0.1.0").expect("instance");
        let _beating = crate::Registration::register(&config, &settings, instance).await.expect("register");
        let mut reader = Reader::open(config.clone(), settings.topic.clone(), vec![None]).expect("reader");
        // Long enough for a new consumer's first fetch (its first offset query waits half a
        // second), short for a test.
        reader.stalled_after = Duration::from_secs(2);
        let state = Mutex::new(State { table: Table::new(settings.ttl), clock: RegistryClock::new(Instant::now(), vec![0]) });
        let first = Arc::as_ptr(&reader.consumer);
        // Reading: looks find it at the ends, for longer than `stalled_after`.
        let reading_until = Instant::now() + Duration::from_secs(3);
        let mut looks = tokio::time::interval_at(Instant::now() + Duration::from_millis(100), Duration::from_millis(100));
        while Instant::now() < reading_until {
            let consumer = reader.consumer.clone();
            let received = tokio::select! {
                _ = looks.tick() => None,
                received = consumer.recv() => Some(received.map(|m| m.detach())),
            };
            match received {
                None => reader.look(&state).await,
                Some(received) => reader.read(&received.expect("a record")),
            }
        }
        assert_eq!(Arc::as_ptr(&reader.consumer), first, "a consumer that reads is kept");
        let next = reader.next[0].expect("records read");
        // Standing still while heartbeats go on.
        let mut partition = TopicPartitionList::new();
        partition.add_partition(&settings.topic, 0);
        reader.consumer.pause(&partition).expect("pause");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Arc::as_ptr(&reader.consumer) == first {
            assert!(Instant::now() < deadline, "the standing consumer was not replaced");
            looks.tick().await;
            reader.look(&state).await;
        }
        let message = tokio::time::timeout(Duration::from_secs(20), reader.consumer.recv()).await.expect("the new consumer reads").expect("a record");
        assert_eq!(message.offset(), next, "the new consumer goes on after the last record read");
    }
}
