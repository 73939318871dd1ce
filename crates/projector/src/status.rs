//! Status: where a projection stands, per partition, and how fast it moves.
//!
//! Lag is measured against the end of what a `read_committed` reader can see: the last
//! stable offset (what `ListOffsets` returns under `read_committed`), or the offset
//! reached when the partition reported EOF, never the high watermark (transaction
//! markers and open transactions sit between the two).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_bus::KafkaConfig;
use serde::Serialize;

use crate::position::{self, Key};
use crate::store::{Store, StoreError};

/// The state of one partition.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: i32,
    /// Next offset to apply, as stored with the view (`None`: nothing applied yet).
    pub position: Option<i64>,
    /// End of the readable log: last stable offset or EOF offset, when known.
    pub end_offset: Option<i64>,
    /// `end_offset - position` (from the log start when no position is stored).
    pub lag: Option<i64>,
    /// `running`, `retrying`, `dead-lettering`, `circuit-open`, `parked` (its poison
    /// record's dead letter cannot be written: the projector reports itself unhealthy), or
    /// `stored` (read from the store by [`read`], no live process).
    pub state: String,
    /// Records fetched and waiting for a batch.
    pub buffered: usize,
    /// Paused in the client (buffer full or circuit open).
    pub paused: bool,
    /// The last error seen on this partition.
    pub last_error: Option<String>,
}

/// The state of a projection.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Status {
    /// Projection name.
    pub projection: String,
    /// The view version this process writes.
    pub version: u32,
    /// Topic.
    pub topic: String,
    /// Consumer group (empty when read from the store only).
    pub group: String,
    /// True while the projector runs.
    pub running: bool,
    /// Events applied per second over the last 10 seconds.
    pub events_per_second: f64,
    /// Events applied since start.
    pub applied_total: u64,
    /// Records dead-lettered since start (or, from [`read`], recorded in the store).
    pub dead_lettered_total: u64,
    /// Batches committed since start: one partition's records applied together. The store
    /// thread merges batches of several partitions waiting at once into one transaction,
    /// so transactions (`herald_projector_batch_seconds`' count) may be fewer.
    pub batches_total: u64,
    /// The last error of any kind (a partition's batch failing in the store, a client
    /// error): the more recent of the two.
    pub last_error: Option<String>,
    /// How long ago `last_error` happened, in whole seconds (`None` when read from the
    /// store only): an error of an hour ago, since recovered from, is not one happening now.
    pub last_error_seconds_ago: Option<u64>,
    /// Partitions, by number.
    pub partitions: Vec<PartitionStatus>,
    /// Total lag over partitions whose lag is known.
    pub total_lag: i64,
}

/// A live status, updated by the running projector and read by the HTTP endpoint.
#[derive(Clone, Default)]
pub struct StatusHandle {
    inner: Arc<Mutex<Board>>,
}

#[derive(Default)]
struct Board {
    status: Status,
    samples: VecDeque<(Instant, u64)>,
}

impl StatusHandle {
    /// The current status.
    pub fn get(&self) -> Status {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).status.clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut board = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut board.status);
        let now = Instant::now();
        let applied = board.status.applied_total;
        if board.samples.back().is_some_and(|(_, a)| *a > applied) {
            // A new projector took over this handle (after a swap): its count starts at 0.
            board.samples.clear();
        }
        if board.samples.back().is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(500)) {
            board.samples.push_back((now, applied));
        }
        while board.samples.len() > 2 && board.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10)) {
            board.samples.pop_front();
        }
        if let (Some((t0, a0)), Some((t1, a1))) = (board.samples.front(), board.samples.back()) {
            let dt = t1.duration_since(*t0).as_secs_f64();
            board.status.events_per_second = if dt > 0.0 { a1.saturating_sub(*a0) as f64 / dt } else { 0.0 };
        }
        let s = &mut board.status;
        s.total_lag = s.partitions.iter().filter_map(|p| p.lag).sum();
    }
}

impl herald_ops::HealthCheck for StatusHandle {
    fn check(&self) -> (bool, serde_json::Value) {
        let status = self.get();
        // A partition parked on a dead letter that cannot be written needs an operator.
        let healthy = status.running && !status.partitions.iter().any(|p| p.state == "parked");
        (healthy, serde_json::to_value(&status).unwrap_or(serde_json::Value::Null))
    }
}

/// Failure of [`read`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The store could not be read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The broker could not be asked for offsets.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker knows no partitions of the topic.
    #[error(transparent)]
    Topic(OffsetsError),
    /// The version asked for was never built (nor is live or previous).
    #[error("{projection} has no version {version} (the highest known is {highest})")]
    NoSuchVersion {
        /// The projection.
        projection: String,
        /// The version asked for.
        version: u32,
        /// The highest version built, live or previous (0: none).
        highest: u32,
    },
}

impl From<OffsetsError> for StatusError {
    fn from(error: OffsetsError) -> Self {
        match error {
            OffsetsError::Kafka(e) => StatusError::Kafka(e),
            other => StatusError::Topic(other),
        }
    }
}

/// The end offsets of a topic could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OffsetsError {
    /// The broker could not be asked.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker does not know the topic (or reports no partitions for it).
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// The broker answered the topic's metadata with an error.
    #[error("metadata of topic {topic:?}: {code}")]
    Metadata {
        /// The topic.
        topic: String,
        /// The broker's error.
        code: rdkafka::types::RDKafkaErrorCode,
    },
}

/// Whether the store holds `projection`: a live view, or positions or dead letters of
/// any version. Before a projection first ran on a store (or with a mistyped name or
/// store), [`read`] reports the whole log as lag; `herald projector status` asks this
/// first and says so instead.
pub async fn holds(store: Arc<dyn Store>, projection: &str) -> Result<bool, StatusError> {
    let projection = projection.to_owned();
    let task = tokio::task::spawn_blocking(move || -> Result<bool, StatusError> {
        let mut conn = store.connect()?;
        let mut tx = conn.begin(1)?;
        position::migrate(tx.as_tx())?;
        let held = position::live_version(tx.as_tx(), &projection)?.is_some() || position::highest_built_version(tx.as_tx(), &projection)?.is_some();
        tx.rollback()?;
        Ok(held)
    });
    task.await.unwrap_or_else(|e| Err(StatusError::Store(StoreError::Connect(format!("status task: {e}")))))
}

/// Reads a projection's status without a running projector: positions and dead letters
/// from the store, the last stable offsets from the broker. What `herald projector status
/// NAME` prints. `version` defaults to the live version.
pub async fn read(store: Arc<dyn Store>, config: &KafkaConfig, projection: &str, version: Option<u32>, topic: &str) -> Result<Status, StatusError> {
    let (projection, topic) = (projection.to_owned(), topic.to_owned());
    let config = config.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<Status, StatusError> {
        let mut conn = store.connect()?;
        let mut tx = conn.begin(1)?;
        position::migrate(tx.as_tx())?;
        let versions = position::live_version(tx.as_tx(), &projection)?;
        let live = versions.map(|(live, _)| live);
        if let Some(asked) = version {
            // Its positions would read as "nothing read yet", the whole log as lag.
            let highest = position::highest_built_version(tx.as_tx(), &projection)?.unwrap_or(0).max(live.unwrap_or(0)).max(versions.and_then(|(_, previous)| previous).unwrap_or(0));
            if asked == 0 || asked > highest {
                return Err(StatusError::NoSuchVersion { projection, version: asked, highest });
            }
        }
        let version = version.or(live).unwrap_or(1);
        let key = Key { projection: projection.clone(), version, topic: topic.clone() };
        let positions = position::load(tx.as_tx(), &key)?;
        let dead = position::dead_letters(tx.as_tx(), &key)?;
        tx.rollback()?;
        let ends = end_offsets(&config, &topic)?;
        let mut partitions: BTreeMap<i32, PartitionStatus> = BTreeMap::new();
        for (&partition, &(low, end)) in &ends {
            let position = positions.get(&partition).copied();
            let from = position.unwrap_or(low);
            partitions.insert(
                partition,
                PartitionStatus {
                    partition,
                    position,
                    end_offset: Some(end),
                    lag: Some((end - from).max(0)),
                    state: "stored".into(),
                    last_error: dead.iter().rev().find(|d| d.partition == partition).map(|d| format!("offset {} dead-lettered: {}", d.offset, d.reason)),
                    ..Default::default()
                },
            );
        }
        let mut status = Status {
            projection,
            version,
            topic,
            dead_lettered_total: dead.len() as u64,
            last_error: dead.last().map(|d| d.reason.clone()),
            partitions: partitions.into_values().collect(),
            ..Default::default()
        };
        status.total_lag = status.partitions.iter().filter_map(|p| p.lag).sum();
        Ok(status)
    });
    task.await.unwrap_or_else(|e| Err(StatusError::Store(StoreError::Connect(format!("status task: {e}")))))
}

/// `(low watermark, last stable offset)` per partition, as a `read_committed` reader sees
/// them, with a client of its own (for one-off reads; a running projector keeps a
/// [`Watermarks`]).
pub(crate) fn end_offsets(config: &KafkaConfig, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>, OffsetsError> {
    fetch_ends(&open_client(config)?, topic)
}

fn open_client(config: &KafkaConfig) -> Result<rdkafka::consumer::BaseConsumer, rdkafka::error::KafkaError> {
    let mut client = config.client_config(&[]);
    client.set("isolation.level", "read_committed");
    let client = client.create()?;
    metrics::counter!("herald_projector_status_clients_opened_total").increment(1);
    Ok(client)
}

/// End offsets of one topic through one client, opened on first use and kept: a running
/// projector refreshes its lag every two seconds, and a new client each time would mean a
/// new connection (and TLS and SASL handshakes) to every broker each time. Blocking: call
/// it off the async workers.
pub(crate) struct Watermarks {
    config: KafkaConfig,
    topic: String,
    client: Mutex<Option<rdkafka::consumer::BaseConsumer>>,
}

impl Watermarks {
    pub(crate) fn new(config: KafkaConfig, topic: String) -> Self {
        Watermarks { config, topic, client: Mutex::new(None) }
    }

    /// `(low watermark, last stable offset)` per partition. A client that failed is not
    /// kept: the next fetch opens a new one (librdkafka can leave a client with no broker
    /// for good after one was fenced for a moment, see [`herald_bus::rebootstrap`]).
    pub(crate) fn fetch(&self) -> Result<BTreeMap<i32, (i64, i64)>, OffsetsError> {
        let mut kept = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let client = match kept.take() {
            Some(c) => c,
            None => open_client(&self.config)?,
        };
        let ends = fetch_ends(&client, &self.topic);
        if ends.is_ok() {
            *kept = Some(client);
        }
        ends
    }
}

/// `(low watermark, last stable offset)` of each partition of `topic`: never empty (a
/// topic the broker does not know is an error, not a topic without records).
fn fetch_ends(client: &rdkafka::consumer::BaseConsumer, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>, OffsetsError> {
    use rdkafka::consumer::Consumer;
    use rdkafka::types::RDKafkaErrorCode;
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return Err(OffsetsError::UnknownTopic(topic.to_owned())) };
    match found.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Err(OffsetsError::UnknownTopic(topic.to_owned())),
        Some(code) => return Err(OffsetsError::Metadata { topic: topic.to_owned(), code }),
    }
    if found.partitions().is_empty() {
        return Err(OffsetsError::UnknownTopic(topic.to_owned()));
    }
    found.partitions().iter().map(|p| Ok((p.id(), client.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?))).collect()
}
