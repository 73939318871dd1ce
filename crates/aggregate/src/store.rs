//! [`EventStore`]: the event-store reads of an aggregate's event topic: one aggregate's
//! stream from a version, all events from a position, and the state as of a version or a
//! time (time travel).
//!
//! # How a stream is read
//! 1. The [`StreamIndex`](crate::StreamIndex) view (in its store: SQLite or PostgreSQL)
//!    gives the versions, partitions and offsets of the aggregate's events, and how far
//!    the index is in each partition; both from one read transaction.
//! 2. The records at those offsets are fetched from Kafka (assigned partition,
//!    `read_committed`; offsets at most 32 apart read in one run),
//!    never the whole topic. Each record's key and `ce_sequence` must be what the index
//!    says, or the read fails ([`ReadError::Inconsistent`]).
//! 3. The events the index has not reached yet are read from the aggregate's partition,
//!    from the index's position to the partition's end (the last stable offset): a read
//!    sees every event committed before it, however far behind the index is; what it costs
//!    is the index's lag in that partition (or the whole partition when the index has not
//!    started on it). A read bounded by a version or a time the index already passed skips
//!    this step.
//!
//! A record on the event topic that the engine did not write (published by hand: no
//! `ce_sequence`, or a `ce_id` that is not the engine's) is no event of any stream: the
//! index dead-letters it ([`StreamIndex`](crate::StreamIndex)), and the reads after the
//! index's position and [`EventStore::read_all_raw`] skip it. Telling a `ce_id` the
//! engine's needs the aggregate's name: the typed reads know it (`A::NAME`); the raw ones
//! know it once told ([`EventStore::written_by`]), and skip only records without
//! `ce_sequence` until then.

use std::collections::BTreeMap;
use std::sync::Arc;

use herald_bus::codec::SingleObject;
use herald_bus::{EventFamily, KafkaConfig, Metadata};
use herald_projector::{Store, StoreError};
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::Mutex;

use crate::aggregate::Aggregate;
use crate::fetch::Fetcher;
use crate::headers;
use crate::index::{self, Entry};
use crate::recorded::{At, Recorded, Snapshot};

/// A read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The index store could not be read (not built yet: run the
    /// [`StreamIndex`](crate::StreamIndex) projection on it first).
    #[error("index store: {0}")]
    Index(#[from] StoreError),
    /// The index store indexes other topics, not this one.
    #[error("the index store indexes {indexed:?}, not {topic}")]
    NotIndexed {
        /// The topic asked for.
        topic: String,
        /// The topics it has.
        indexed: Vec<String>,
    },
    /// The event topic does not exist.
    #[error("topic {0} does not exist")]
    NoTopic(String),
    /// A Kafka client call failed, or the broker sent nothing for 30 s.
    #[error("kafka: {0}")]
    Kafka(String),
    /// An indexed record is not on the topic (deleted by retention?).
    #[error("no record at offset {offset} of partition {partition}")]
    Missing {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// The topic does not hold what the index says (another key or version there, or a
    /// gap in the versions): the index belongs to another topic or was built wrongly.
    #[error("index and topic disagree: {0}")]
    Inconsistent(String),
    /// A record's payload did not decode as the aggregate's event.
    #[error("record {partition}/{offset}: {message}")]
    Decode {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Why.
        message: String,
    },
    /// The index store's thread failed.
    #[error("store thread: {0}")]
    Thread(String),
}

/// Where "read all" starts or stopped: the next offset to read in each partition (a
/// partition not named starts at its beginning).
///
/// ```
/// let mut p = herald_aggregate::LogPosition::default();
/// p.0.insert(2, 41);
/// assert_eq!(p.next(2), 41);
/// assert_eq!(p.next(0), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPosition(pub BTreeMap<i32, i64>);

impl LogPosition {
    /// The next offset to read in `partition`.
    pub fn next(&self, partition: i32) -> i64 {
        self.0.get(&partition).copied().unwrap_or(0)
    }
}

/// A page of "read all": the events, and the position after them.
#[derive(Debug, Clone)]
pub struct Page<E> {
    /// The events, partition after partition, in offset order within each (so in version
    /// order within each aggregate).
    pub events: Vec<Recorded<E>>,
    /// Where to continue.
    pub next: LogPosition,
}

/// The event-store reads of one event topic, with the [`StreamIndex`](crate::StreamIndex)
/// in `index` (see the [module docs](self) for how a stream is read).
///
/// Reads take `&self` and run one at a time (they share one Kafka consumer).
///
/// ```no_run
/// # async fn run<A: herald_aggregate::Aggregate + Default>() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_aggregate::{At, EventStore};
/// let index = herald_projector::store::open("sqlite:accounts-stream.db")?;
/// let store = EventStore::new(&herald_bus::KafkaConfig::new("127.0.0.1:9092"), A::EVENTS.name(), index)?;
/// let events = store.read_stream::<A>("acct-1", 3).await?; // versions 3, 4, ...
/// let then = store.state_at(&A::default(), "acct-1", At::Version(2)).await?;
/// println!("{} events from version 3; at version {}: {:?}", events.len(), then.version, then.state);
/// # Ok(()) }
/// ```
pub struct EventStore {
    config: KafkaConfig,
    topic: String,
    index: Arc<dyn Store>,
    fetcher: Mutex<Fetcher>,
    /// The aggregate whose engine writes the topic ([`Aggregate::NAME`]), when known.
    writer: Option<String>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore").field("topic", &self.topic).field("index", &self.index.kind()).finish()
    }
}

/// What the index says about one aggregate, read in one transaction.
struct Indexed {
    entries: Vec<Entry>,
    /// The aggregate's last indexed version (0: none).
    last: i64,
    /// Where the index is in each partition.
    positions: BTreeMap<i32, i64>,
    /// Whether the bound of the read is inside the index (no need to read past it).
    bounded: bool,
}

impl EventStore {
    /// The reads of event topic `topic` (as named, prefix included) with its index in
    /// `index`. Creates its Kafka consumer (it connects in the background); the index
    /// store is connected on each read.
    pub fn new(config: &KafkaConfig, topic: impl Into<String>, index: Arc<dyn Store>) -> Result<Self, ReadError> {
        let topic = topic.into();
        let fetcher = Fetcher::new(config, &topic)?;
        Ok(EventStore { config: config.clone(), topic, index, fetcher: Mutex::new(fetcher), writer: None })
    }

    /// The raw reads check each record after the index's position against the event ids
    /// the engine of aggregate `name` ([`Aggregate::NAME`]) gives, as the index does: a
    /// record published by hand with a `ce_sequence` of its own is then skipped too,
    /// instead of being read as the next version (a state no index would agree with).
    /// The typed reads (`read_stream::<A>`, `state_at`, `read_all::<A>`) use `A::NAME`.
    pub fn written_by(mut self, name: impl Into<String>) -> Self {
        self.writer = Some(name.into());
        self
    }

    /// The event topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many records this store's reads fetched from Kafka so far, wanted or not
    /// (what shows a stream was read by index, not by scanning).
    pub async fn records_read(&self) -> u64 {
        self.fetcher.lock().await.records_read()
    }

    /// The stream of aggregate `id` from version `from` on (1: all of it), as on the topic
    /// (payloads not decoded). Empty for an aggregate without events.
    pub async fn read_stream_raw(&self, id: &str, from: i64) -> Result<Vec<Recorded<Vec<u8>>>, ReadError> {
        self.read(id, from.max(1), At::Latest, self.writer.as_deref()).await
    }

    /// The stream of aggregate `id` up to `at` (the prefix [`At`] describes), raw.
    pub async fn read_stream_until_raw(&self, id: &str, at: At) -> Result<Vec<Recorded<Vec<u8>>>, ReadError> {
        self.read(id, 1, at, self.writer.as_deref()).await
    }

    /// The stream of aggregate `id` of `A` from version `from` on, decoded.
    pub async fn read_stream<A: Aggregate>(&self, id: &str, from: i64) -> Result<Vec<Recorded<A::Event>>, ReadError> {
        let codec = SingleObject::new(A::Event::schemas().clone());
        self.read(id, from.max(1), At::Latest, Some(A::NAME)).await?.into_iter().map(|r| r.decode::<A::Event>(&codec)).collect()
    }

    /// The state of aggregate `id` as of `at`: its events up to there folded with
    /// `aggregate`'s `evolve` from the default state.
    pub async fn state_at<A: Aggregate>(&self, aggregate: &A, id: &str, at: At) -> Result<Snapshot<A::State>, ReadError> {
        fold(aggregate, &self.read(id, 1, at, Some(A::NAME)).await?)
    }

    /// Every event from `from` on, at most `max` (read from the topic: reading all is a
    /// scan by nature, the index is not needed), raw; continue from [`Page::next`].
    pub async fn read_all_raw(&self, from: &LogPosition, max: usize) -> Result<Page<Vec<u8>>, ReadError> {
        self.read_all_of(from, max, self.writer.as_deref()).await
    }

    /// [`EventStore::read_all_raw`], keeping the records `writer`'s engine wrote.
    async fn read_all_of(&self, from: &LogPosition, max: usize, writer: Option<&str>) -> Result<Page<Vec<u8>>, ReadError> {
        let fetcher = self.fetcher.lock().await;
        let partitions = fetcher.partitions(&self.config).await?.ok_or_else(|| ReadError::NoTopic(self.topic.clone()))?;
        let (mut events, mut next) = (Vec::new(), from.clone());
        for p in 0..partitions as i32 {
            if events.len() >= max {
                break;
            }
            let records = fetcher.to_end(p, from.next(p), max - events.len(), |_| true).await?;
            for m in records {
                next.0.insert(p, m.offset() + 1);
                // Not the engine's: no event of any stream.
                if let Some(event) = engines_event(&m, writer)? {
                    events.push(event);
                }
            }
        }
        Ok(Page { events, next })
    }

    /// [`EventStore::read_all_raw`], decoded as `A`'s events.
    pub async fn read_all<A: Aggregate>(&self, from: &LogPosition, max: usize) -> Result<Page<A::Event>, ReadError> {
        let codec = SingleObject::new(A::Event::schemas().clone());
        let page = self.read_all_of(from, max, Some(A::NAME)).await?;
        let events = page.events.into_iter().map(|r| r.decode::<A::Event>(&codec)).collect::<Result<_, _>>()?;
        Ok(Page { events, next: page.next })
    }

    /// What the index has of `id` (versions `from` up to what `at` allows) and its positions.
    async fn indexed(&self, id: &str, from: i64, at: At) -> Result<Indexed, ReadError> {
        let (store, id, topic) = (self.index.clone(), id.to_owned(), self.topic.clone());
        let task = tokio::task::spawn_blocking(move || -> Result<Indexed, ReadError> {
            let mut conn = store.connect()?;
            let mut tx = conn.read()?;
            let tx = tx.as_tx();
            let positions = index::positions(tx, &topic)?;
            if positions.is_empty() {
                let indexed = index::topics(tx)?;
                if !indexed.is_empty() {
                    return Err(ReadError::NotIndexed { topic, indexed });
                }
            }
            let last = last_version(tx, &id)?;
            // The last version `at` allows, when the index already has the event after it.
            let to = match at {
                At::Latest => None,
                At::Version(n) => Some(n).filter(|n| *n <= last),
                At::Time(t) => index::first_after(tx, &id, t.timestamp_micros())?.map(|v| v - 1),
            };
            let entries = index::entries(tx, &id, from, to)?;
            Ok(Indexed { entries, last, positions, bounded: to.is_some() })
        });
        task.await.map_err(|e| ReadError::Thread(e.to_string()))?
    }

    /// The stream of `id`: versions from `from` to what `at` allows.
    async fn read(&self, id: &str, from: i64, at: At, writer: Option<&str>) -> Result<Vec<Recorded<Vec<u8>>>, ReadError> {
        let indexed = self.indexed(id, from, at).await?;
        let fetcher = self.fetcher.lock().await;
        let mut out: Vec<Recorded<Vec<u8>>> = Vec::with_capacity(indexed.entries.len());
        // 1. The indexed events, by offset, partition by partition (one, unless the topic
        //    was re-partitioned), then in version order.
        let mut by_partition: BTreeMap<i32, Vec<&Entry>> = BTreeMap::new();
        for e in &indexed.entries {
            by_partition.entry(e.partition).or_default().push(e);
        }
        for (p, entries) in &by_partition {
            let offsets: Vec<i64> = entries.iter().map(|e| e.offset).collect();
            for (m, e) in fetcher.at_offsets(*p, &offsets).await?.iter().zip(entries) {
                let r = recorded(m)?;
                if r.aggregate_id != id || r.version != e.version {
                    return Err(ReadError::Inconsistent(format!("{p}/{} holds {:?} version {}, the index says {id:?} version {}", e.offset, r.aggregate_id, r.version, e.version)));
                }
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.version);
        // 2. The events after the index, unless the bound is already inside it.
        if indexed.bounded {
            return Ok(out);
        }
        let partition = match indexed.entries.first() {
            Some(e) => e.partition,
            None => {
                let count = fetcher.partitions(&self.config).await?.ok_or_else(|| ReadError::NoTopic(self.topic.clone()))?;
                herald_bus::partitioner::partition_for(id.as_bytes(), count as u32) as i32
            }
        };
        let start = indexed.positions.get(&partition).copied().unwrap_or(0);
        let tail = fetcher.to_end(partition, start, usize::MAX, |m| m.key() == Some(id.as_bytes())).await?;
        let mut version = indexed.last;
        for m in &tail {
            // A record the engine did not write (published by hand on the event topic): no
            // event of the stream, as the index leaves it out.
            let Some(r) = engines_event(m, writer)? else { continue };
            if r.version != version + 1 {
                return Err(ReadError::Inconsistent(format!("{partition}/{} is {id:?} version {} after version {version}", m.offset(), r.version)));
            }
            version = r.version;
            if at.excludes(&r) {
                break;
            }
            if r.version >= from {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// The state after `events` (a stream from version 1, raw, as [`EventStore::read_stream_raw`]
/// returns it), folded with `aggregate`'s `evolve` from the default state.
pub fn fold<A: Aggregate>(aggregate: &A, events: &[Recorded<Vec<u8>>]) -> Result<Snapshot<A::State>, ReadError> {
    let codec = SingleObject::new(A::Event::schemas().clone());
    let mut snapshot = Snapshot { state: A::State::default(), version: 0, time: None };
    for raw in events {
        let recorded = raw.clone().decode::<A::Event>(&codec)?;
        snapshot.state = aggregate.evolve(snapshot.state, &recorded.event);
        snapshot.version = recorded.version;
        snapshot.time = Some(recorded.time);
    }
    Ok(snapshot)
}

/// The largest version of `id` in the index (0: none).
fn last_version(tx: &mut dyn herald_projector::Tx, id: &str) -> Result<i64, StoreError> {
    let row = tx.query_opt(&format!("SELECT MAX(version) FROM {} WHERE aggregate_id = $1", index::VIEW), &[herald_projector::Value::Text(id)])?;
    Ok(row.and_then(|r| r.int(0).ok()).unwrap_or(0))
}

/// `m` as a [`Recorded`] when the engine of aggregate `writer` (when known) wrote it: it
/// has a `ce_sequence`, and its `ce_id` is the one the engine gives that version
/// ([`is_its_event`](crate::stored::is_its_event)), as the index checks. `None` for any
/// other record: no event of any stream.
fn engines_event(m: &OwnedMessage, writer: Option<&str>) -> Result<Option<Recorded<Vec<u8>>>, ReadError> {
    let Some(version) = sequence_of(m) else { return Ok(None) };
    let meta = match Metadata::from_headers(m.headers(), m.key(), "") {
        Ok(meta) => meta,
        Err(_) if writer.is_some() => return Ok(None),
        Err(e) => return Err(ReadError::Inconsistent(format!("{}/{}: {e}", m.partition(), m.offset()))),
    };
    if let Some(name) = writer
        && !crate::stored::is_its_event(name, &meta.subject, version, meta.id, meta.causation_id.as_deref())
    {
        return Ok(None);
    }
    Ok(Some(recorded_as(m, meta, version)))
}

/// The version a record's `ce_sequence` header gives, if it has one.
fn sequence_of(m: &OwnedMessage) -> Option<i64> {
    let sequence = m.headers().into_iter().flat_map(herald_bus::headers::pairs).find(|(name, _)| *name == headers::SEQUENCE.as_bytes()).and_then(|(_, value)| value);
    sequence.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.trim().parse::<i64>().ok())
}

/// A record of the event topic as a [`Recorded`] with its payload.
fn recorded(m: &OwnedMessage) -> Result<Recorded<Vec<u8>>, ReadError> {
    let at = format!("{}/{}", m.partition(), m.offset());
    let meta = Metadata::from_headers(m.headers(), m.key(), "").map_err(|e| ReadError::Inconsistent(format!("{at}: {e}")))?;
    let version = sequence_of(m).ok_or_else(|| ReadError::Inconsistent(format!("{at} has no {} header: not an aggregate's event", headers::SEQUENCE)))?;
    Ok(recorded_as(m, meta, version))
}

/// `m` as a [`Recorded`] of `version`, with the metadata read from its headers.
fn recorded_as(m: &OwnedMessage, meta: Metadata, version: i64) -> Recorded<Vec<u8>> {
    let aggregate_id = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_else(|| meta.subject.clone());
    Recorded {
        aggregate_id,
        version,
        event_id: meta.id.to_string(),
        event_type: meta.event_type,
        time: meta.time,
        causation_id: meta.causation_id,
        partition: m.partition(),
        offset: m.offset(),
        event: m.payload().unwrap_or_default().to_vec(),
    }
}
