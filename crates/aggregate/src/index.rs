//! [`StreamIndex`]: the projection that indexes an aggregate's event topic, so one
//! aggregate's stream is read by offset instead of by scanning the topic; and the queries
//! [`EventStore`](crate::EventStore) runs on it.
//!
//! It runs on herald-projector like any view (exactly once in effect: each event's row
//! and the position commit in one store transaction; rebuild; `/health`, `/metrics` with
//! the projector's program), on SQLite or PostgreSQL. One row per event:
//!
//! | column | what |
//! |---|---|
//! | `aggregate_id` | the record's key (`ce_subject`) |
//! | `version` | 1, 2, 3, ... per aggregate, in offset order (what `ce_sequence` says: the reader checks it) |
//! | `kafka_partition`, `kafka_offset` | where the record is |
//! | `time_us` | `ce_time`, microseconds since the epoch |
//! | `event_type`, `event_id`, `causation_id` | `ce_type`, `ce_id`, `ce_causationid` |
//!
//! The projector hands a projection the event and its CloudEvents metadata, not the
//! extension headers, so the version is counted here (the previous row's + 1, in offset
//! order, which is how the engine numbers them) and checked against `ce_sequence` by the
//! reader on every record it fetches. A record the engine did not write (its `ce_id` is
//! not the engine's id of that version: [`is_its_event`](crate::stored::is_its_event)) is
//! refused as a permanent error, so the projector dead-letters it and it takes no version.
//! Serve the view from one store per event topic.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use herald_bus::Envelope;
use herald_projector::store::{OwnedValue, Row};
use herald_projector::{Projection, ProjectionError, StoreError, Tx, Value};

use crate::aggregate::Aggregate;

/// The view's name (the projection's name, and the logical table queries read).
pub const VIEW: &str = "aggregate_stream";

/// The projection: one row per event of `A::EVENTS`.
///
/// ```no_run
/// # async fn run<A: herald_aggregate::Aggregate>() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_aggregate::StreamIndex;
/// use herald_projector::{store, Projector};
/// let index = store::open("sqlite:accounts-stream.db")?;
/// let projector = Projector::builder(herald_bus::KafkaConfig::new("127.0.0.1:9092"), "accounts-stream", &A::EVENTS, StreamIndex::<A>::new(), index).build().await?;
/// projector.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct StreamIndex<A>(PhantomData<fn() -> A>);

impl<A> StreamIndex<A> {
    /// The index of `A`'s events.
    pub fn new() -> Self {
        StreamIndex(PhantomData)
    }
}

impl<A> Default for StreamIndex<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> std::fmt::Debug for StreamIndex<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamIndex")
    }
}

impl<A: Aggregate> Projection<A::Event> for StreamIndex<A> {
    const NAME: &'static str = VIEW;

    fn views(&self) -> &'static [&'static str] {
        &[VIEW]
    }

    fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError> {
        let t = tx.table(VIEW);
        tx.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                aggregate_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                kafka_partition BIGINT NOT NULL,
                kafka_offset BIGINT NOT NULL,
                time_us BIGINT NOT NULL,
                event_type TEXT NOT NULL,
                event_id TEXT NOT NULL,
                causation_id TEXT,
                PRIMARY KEY (aggregate_id, version)
            );
            CREATE UNIQUE INDEX IF NOT EXISTS {t}_at ON {t} (kafka_partition, kafka_offset)"
        ))?;
        Ok(())
    }

    fn apply(&self, tx: &mut dyn Tx, event: &Envelope<A::Event>) -> Result<(), ProjectionError> {
        let t = tx.table(VIEW);
        // The next version of this aggregate, in the same statement (one round trip; the
        // primary key makes MAX a lookup).
        let sql = format!(
            "INSERT INTO {t} (aggregate_id, version, kafka_partition, kafka_offset, time_us, event_type, event_id, causation_id)
             SELECT CAST($1 AS TEXT), COALESCE(MAX(version), 0) + 1, CAST($2 AS BIGINT), CAST($3 AS BIGINT), CAST($4 AS BIGINT), CAST($5 AS TEXT), CAST($6 AS TEXT), CAST($7 AS TEXT)
             FROM {t} WHERE aggregate_id = CAST($1 AS TEXT)
             RETURNING version"
        );
        let (meta, at) = (&event.meta, &event.position);
        let id = meta.id.to_string();
        let row = tx.query_opt(
            &sql,
            &[
                Value::Text(&meta.subject),
                Value::Int(at.partition.into()),
                Value::Int(at.offset),
                Value::Int(meta.time.timestamp_micros()),
                Value::Text(&meta.event_type),
                Value::Text(&id),
                meta.causation_id.as_deref().into(),
            ],
        )?;
        let version = row.map(|r| r.int(0)).transpose()?.unwrap_or(0);
        // A record the engine did not write (published by hand on the event topic) would
        // take the next version and shift every later one: refused, so the projector
        // dead-letters it and rolls its row back.
        if !crate::stored::is_its_event(A::NAME, &meta.subject, version, meta.id, meta.causation_id.as_deref()) {
            return Err(ProjectionError::Permanent(format!(
                "{} at {}/{} is not an event {} wrote: its ce_id {id} is not the id of {:?} version {version}; left out of the index",
                meta.event_type, at.partition, at.offset, A::NAME, meta.subject
            )));
        }
        Ok(())
    }
}

/// One row of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The version.
    pub version: i64,
    /// The record's partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// `ce_time` in microseconds since the epoch.
    pub time_us: i64,
}

fn int(row: &Row, i: usize) -> Result<i64, StoreError> {
    row.int(i)
}

/// The entries of `id` from version `from` on, in version order; with `to`, up to it.
pub fn entries(tx: &mut dyn Tx, id: &str, from: i64, to: Option<i64>) -> Result<Vec<Entry>, StoreError> {
    let rows = tx.query(
        &format!("SELECT version, kafka_partition, kafka_offset, time_us FROM {VIEW} WHERE aggregate_id = $1 AND version >= $2 AND version <= $3 ORDER BY version"),
        &[Value::Text(id), Value::Int(from), Value::Int(to.unwrap_or(i64::MAX))],
    )?;
    rows.iter()
        .map(|r| Ok(Entry { version: int(r, 0)?, partition: i32::try_from(int(r, 1)?).map_err(|e| StoreError::Type(e.to_string()))?, offset: int(r, 2)?, time_us: int(r, 3)? }))
        .collect()
}

/// The first version of `id` whose time is after `time_us`, if the index has one.
pub fn first_after(tx: &mut dyn Tx, id: &str, time_us: i64) -> Result<Option<i64>, StoreError> {
    let row = tx.query_opt(&format!("SELECT MIN(version) FROM {VIEW} WHERE aggregate_id = $1 AND time_us > $2"), &[Value::Text(id), Value::Int(time_us)])?;
    Ok(row.and_then(|r| match r.values.first() {
        Some(OwnedValue::Int(v)) => Some(*v),
        _ => None,
    }))
}

/// How far the live index is, per partition of `topic`: the next offset it will index.
/// Empty when it has not indexed `topic` (another topic's index, or none yet).
pub fn positions(tx: &mut dyn Tx, topic: &str) -> Result<BTreeMap<i32, i64>, StoreError> {
    let rows = tx.query(
        "SELECT p.partition_id, p.next_offset FROM herald_positions p JOIN herald_views v ON v.projection = p.projection AND v.live_version = p.version WHERE p.projection = $1 AND p.topic = $2",
        &[Value::Text(VIEW), Value::Text(topic)],
    )?;
    rows.iter().map(|r| Ok((i32::try_from(int(r, 0)?).map_err(|e| StoreError::Type(e.to_string()))?, int(r, 1)?))).collect()
}

/// The topics the live index has positions for.
pub fn topics(tx: &mut dyn Tx) -> Result<Vec<String>, StoreError> {
    let rows = tx.query(
        "SELECT DISTINCT p.topic FROM herald_positions p JOIN herald_views v ON v.projection = p.projection AND v.live_version = p.version WHERE p.projection = $1 ORDER BY p.topic",
        &[Value::Text(VIEW)],
    )?;
    rows.iter().map(|r| r.text(0).map(str::to_owned)).collect()
}
