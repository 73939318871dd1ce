//! Discovery: a live map of the registry topic, read from the beginning and followed.

use std::collections::HashSet;
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
/// Each look ([`Reader::look`]) asks the broker for each partition's end and the consumer
/// for its position. When a look finds the consumer at or past the ends of the look
/// before, everything written before that earlier look has been read, and the time between
/// the two looks before is counted. A look that cannot reach the broker, or that finds the
/// consumer behind, counts nothing: the clock stands still through an outage (even before
/// a look notices it), and goes on from where it stood once the topic is read again, so an
/// instance has the rest of its TTL to heartbeat again and one that died meanwhile expires
/// then. Ages are therefore measured in steps of one look, and an instance expires up to
/// two looks after its TTL ran out, never before.
#[derive(Debug)]
struct RegistryClock {
    /// The clock's time: confirmed time since the directory started.
    now: Instant,
    /// Time between the last two looks that reached the broker, counted once a later look
    /// confirms the consumer read past the ends the last one saw.
    pending: Duration,
    /// The last look, if it reached the broker: the partitions' ends and when it began.
    last: Option<(Vec<i64>, Instant)>,
}

impl RegistryClock {
    fn new(now: Instant, ends: Vec<i64>) -> Self {
        RegistryClock { now, pending: Duration::ZERO, last: Some((ends, now)) }
    }

    /// A look begun at `at`: the partitions' ends and the consumer's positions, or `None`
    /// if the broker did not answer. Returns whether the consumer had read up to the ends
    /// of the look before, or `None` when there is nothing to compare with (this look or
    /// the one before did not reach the broker).
    fn looked(&mut self, at: Instant, seen: Option<(Vec<i64>, Vec<Option<i64>>)>) -> Option<bool> {
        let Some((ends, positions)) = seen else {
            self.last = None;
            return None;
        };
        let reading = match self.last.take() {
            Some((before, then)) if read_up_to(&positions, &before) => {
                self.now += std::mem::take(&mut self.pending);
                self.pending = at.saturating_duration_since(then);
                Some(true)
            }
            Some(_) => {
                self.pending = Duration::ZERO;
                Some(false)
            }
            None => None,
        };
        self.last = Some((ends, at));
        reading
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
        let ends = tokio::task::spawn_blocking(move || -> Result<Vec<i64>, KafkaError> {
            (0..partitions as i32).map(|p| consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).map(|(_, high)| high)).collect()
        })
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
    /// Since when the consumer has not been seen reading, at which positions (empty when
    /// its client could not ask the broker).
    standing: Option<(Vec<Option<i64>>, Instant)>,
    /// How long it may stand still before it is replaced.
    stalled_after: Duration,
}

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
        Ok(Reader { config, topic, consumer: Arc::new(consumer), next, standing: None, stalled_after: STALLED_AFTER })
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
                let ends = (0..partitions).map(|p| consumer.fetch_watermarks(&topic, p, Duration::from_secs(2)).map(|(_, high)| high)).collect::<Result<Vec<i64>, _>>().ok()?;
                let positions = consumer.position().ok()?;
                Some((ends, (0..partitions).map(|p| positions.find_partition(&topic, p).and_then(|e| offset_of(e.offset()))).collect::<Vec<_>>()))
            })();
            Look { at, seen }
        })
    }

    /// Counts a look on the clock. Replaces the consumer when it has not read for
    /// `stalled_after`: behind the end without moving, or unable to ask the broker.
    fn looked(&mut self, Look { at, seen }: Look, clock: &Mutex<State>) {
        let positions = seen.as_ref().map(|(_, positions)| positions.clone());
        let reading = clock.lock().unwrap_or_else(|p| p.into_inner()).clock.looked(at, seen);
        if reading == Some(true) {
            self.standing = None;
            return;
        }
        // Behind, or the broker did not answer this consumer's client. It is replaced once
        // it has not moved for `stalled_after`: during an outage its replacement waits like
        // it, after one its replacement reads.
        match (&self.standing, positions) {
            (Some((there, _)), Some(here)) if *there != here => self.standing = Some((here, at)),
            (None, here) => {
                tracing::warn!(positions = ?here, "the registry's consumer is behind where the topic ended at the last look, or cannot ask the broker: instances' ages are not counted until it reads again");
                self.standing = Some((here.unwrap_or_default(), at));
            }
            (Some((there, since)), _) => {
                if at.saturating_duration_since(*since) >= self.stalled_after {
                    tracing::warn!(positions = ?there, "the registry's consumer has not read for {:?}: replacing it", self.stalled_after);
                    self.reopen();
                }
            }
        }
    }

    /// Replaces the consumer by one that goes on after the last record read.
    fn reopen(&mut self) {
        match Reader::open(self.config.clone(), self.topic.clone(), self.next.clone()) {
            Ok(fresh) => {
                let stale = std::mem::replace(&mut self.consumer, fresh.consumer);
                // Closing a consumer waits on librdkafka's threads.
                tokio::task::spawn_blocking(move || drop(stale));
                self.standing = None;
            }
            Err(e) => tracing::error!(error = %e, "replacing the registry's consumer; trying again at the next look"),
        }
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
    let now = state.now();
    state.table.apply(key, record, now, now_ms());
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
        assert_eq!(Some(true), clock.looked(t0 + s(1), Some((vec![7], vec![Some(5)]))), "read up to the start's end");
        assert_eq!(clock.now, t0, "what was written after the start is not known read yet");
        assert_eq!(Some(true), clock.looked(t0 + s(2), Some((vec![9], vec![Some(7)]))));
        assert_eq!(clock.now, t0 + s(1), "the first second is confirmed");
        // The broker goes away: nothing is counted, not even the time since the last look.
        assert_eq!(None, clock.looked(t0 + s(3), None));
        assert_eq!(None, clock.looked(t0 + s(9), None));
        assert_eq!(clock.now, t0 + s(1));
        // Back: the first look has nothing to compare with, the second confirms the
        // interval before the outage and nothing of the outage itself.
        assert_eq!(None, clock.looked(t0 + s(10), Some((vec![12], vec![Some(9)]))));
        assert_eq!(clock.now, t0 + s(1));
        assert_eq!(Some(true), clock.looked(t0 + s(11), Some((vec![14], vec![Some(12)]))));
        assert_eq!(clock.now, t0 + s(2), "the interval before the outage, confirmed now");
        // A consumer behind the last look's ends: its interval is dropped, not counted
        // later in one jump that would expire every instance whose heartbeats it read late.
        assert_eq!(Some(false), clock.looked(t0 + s(12), Some((vec![16], vec![Some(13)]))));
        assert_eq!(Some(true), clock.looked(t0 + s(13), Some((vec![18], vec![Some(16)]))));
        assert_eq!(clock.now, t0 + s(2));
        assert_eq!(Some(true), clock.looked(t0 + s(14), Some((vec![18], vec![Some(18)]))));
        assert_eq!(clock.now, t0 + s(3), "the second up to the look that was caught up");
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
