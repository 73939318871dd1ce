//! [`Tracker`]: the projection that records every event of a saga and its verdict.
//!
//! Tables (logical names, served as database views over the live version):
//! - `saga_events(event_id, correlation_id, causation_id, event_type, source, subject,
//!   time_ms, topic, kafka_partition, kafka_offset, ce_id)`: one row per event, keyed by
//!   its Herald event id (a replayed or duplicated event is recorded once). `event_id` is
//!   [`Metadata::id`](herald_bus::Metadata::id), the UUID unique per event: the `ce_id`
//!   itself when it is a UUID, else one derived from `ce_source` and `ce_id`, which
//!   CloudEvents makes unique only together (`ce_id` `42` from `/a` and from `/b` are two
//!   events). `ce_id` is the id as written, which causation ids name.
//!
//! Stores written before `ce_id` existed were keyed by the id as written. Their
//! migration (once, at the tracker's next start, in the migration's transaction) adds the
//! column, copies `event_id` into it, and re-keys each row whose id as written is not
//! its Herald id (a non-UUID or non-canonical `ce_id`), so replays of those events are
//! still recognised. On PostgreSQL it also re-creates the live `saga_events` view, whose
//! `SELECT *` was expanded when it was created.
//! - `sagas(correlation_id, subject, first_ms, last_ms, events, phase, outcome, violation,
//!   waiting)`: one row per saga, its [`Verdict`](crate::verdict::Verdict) recomputed from all
//!   its recorded events at each new one, so events of different topics may arrive in any
//!   order.

use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use herald_bus::Envelope;
use herald_projector::store::Row;
use herald_projector::{Projection, ProjectionError, StoreError, Tx, Value};

use crate::event::TrackedEvent;
use crate::model::SagaModel;
use crate::saga::{Observed, TrackedSaga};
use crate::verdict::judge;

/// The tracker projection of saga `S`.
///
/// Run one projector per topic of the saga with it ([`crate::run`] does), all on one
/// store: the saga's row is locked (upserted) first in each transaction, so two topics'
/// events of one saga never judge it from different snapshots.
pub struct Tracker<S> {
    model: Arc<SagaModel>,
    _saga: PhantomData<fn() -> S>,
}

impl<S: TrackedSaga> Tracker<S> {
    /// The tracker of `S`, with its model from its declarations.
    pub fn new() -> Self {
        Tracker { model: Arc::new(S::model()), _saga: PhantomData }
    }

    /// The saga's model.
    pub fn model(&self) -> &SagaModel {
        &self.model
    }
}

impl<S: TrackedSaga> Default for Tracker<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Clone for Tracker<S> {
    fn clone(&self) -> Self {
        Tracker { model: self.model.clone(), _saga: PhantomData }
    }
}

/// The columns a [`TrackedEvent`] is read from (`event_id` there is the id as written).
const EVENT_COLUMNS: &str = "COALESCE(ce_id, event_id), correlation_id, causation_id, event_type, source, subject, time_ms, topic, kafka_partition, kafka_offset";
/// The columns an event is inserted into, the key first.
const INSERT_COLUMNS: &str = "event_id, correlation_id, causation_id, event_type, source, subject, time_ms, topic, kafka_partition, kafka_offset, ce_id";

impl<S: TrackedSaga> Projection<Observed<S>> for Tracker<S> {
    const NAME: &'static str = S::NAME;

    fn views(&self) -> &'static [&'static str] {
        &["sagas", "saga_events"]
    }

    fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError> {
        let (sagas, events) = (tx.table("sagas"), tx.table("saga_events"));
        tx.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {sagas} (correlation_id TEXT PRIMARY KEY, subject TEXT NOT NULL, first_ms BIGINT NOT NULL, last_ms BIGINT NOT NULL, \
             events BIGINT NOT NULL, phase TEXT NOT NULL, outcome TEXT, violation TEXT, waiting TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {sagas}_last ON {sagas} (phase, last_ms);
             CREATE TABLE IF NOT EXISTS {events} (event_id TEXT PRIMARY KEY, correlation_id TEXT NOT NULL, causation_id TEXT, event_type TEXT NOT NULL, \
             source TEXT NOT NULL, subject TEXT NOT NULL, time_ms BIGINT NOT NULL, topic TEXT NOT NULL, kafka_partition BIGINT NOT NULL, kafka_offset BIGINT NOT NULL, ce_id TEXT);
             CREATE INDEX IF NOT EXISTS {events}_saga ON {events} (correlation_id)"
        ))?;
        if !has_column(tx, &events, "ce_id")? {
            rekey_events::<S>(tx, &events)?;
        }
        Ok(())
    }

    fn apply(&self, tx: &mut dyn Tx, envelope: &Envelope<Observed<S>>) -> Result<(), ProjectionError> {
        let event = TrackedEvent::from_parts(&envelope.meta, &envelope.position);
        let (sagas, events) = (tx.table("sagas"), tx.table("saga_events"));
        let time = event.time.timestamp_millis();
        // PostgreSQL: one tracker transaction at a time (as SQLite's write lock does), so the
        // projectors of different topics, whose batches touch several sagas in different
        // orders, never deadlock on the sagas' rows. Taken again by each event: a no-op.
        if tx.kind() == "postgres" {
            tx.execute(&format!("SELECT pg_advisory_xact_lock({})", lock_key(S::NAME)), &[])?;
        }
        // Lock the saga's row first (PostgreSQL: a row lock until commit), so a concurrent
        // transaction of another topic's projector judges this saga after this one commits.
        tx.execute(
            &format!("INSERT INTO {sagas} (correlation_id, subject, first_ms, last_ms, events, phase, waiting) VALUES ($1, $2, $3, $3, 0, 'running', '') ON CONFLICT (correlation_id) DO UPDATE SET events = {sagas}.events"),
            &[Value::Text(&event.correlation_id), Value::Text(&event.subject), Value::Int(time)],
        )?;
        // The key: Herald's id of the event, unique per (`ce_source`, `ce_id`).
        let key = envelope.meta.id.to_string();
        let inserted = tx.execute(
            &format!("INSERT INTO {events} ({INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (event_id) DO NOTHING"),
            &[
                Value::Text(&key),
                Value::Text(&event.correlation_id),
                event.causation_id.as_deref().into(),
                Value::Text(&event.event_type),
                Value::Text(&event.source),
                Value::Text(&event.subject),
                Value::Int(time),
                Value::Text(&event.topic),
                Value::Int(event.partition.into()),
                Value::Int(event.offset),
                Value::Text(&event.event_id),
            ],
        )?;
        if inserted == 0 {
            return Ok(()); // seen before: nothing changes
        }
        let recorded = saga_events(tx, &events, &event.correlation_id)?;
        let verdict = judge(&self.model, &recorded);
        let first = recorded.iter().min_by_key(|e| e.time).unwrap_or(&event);
        let last_ms = recorded.iter().map(|e| e.time.timestamp_millis()).max().unwrap_or(time);
        tx.execute(
            &format!("UPDATE {sagas} SET subject = $2, first_ms = $3, last_ms = $4, events = $5, phase = $6, outcome = $7, violation = $8, waiting = $9 WHERE correlation_id = $1"),
            &[
                Value::Text(&event.correlation_id),
                Value::Text(&first.subject),
                Value::Int(first.time.timestamp_millis()),
                Value::Int(last_ms),
                Value::Int(i64::try_from(recorded.len()).unwrap_or(i64::MAX)),
                Value::Text(verdict.phase.as_str()),
                verdict.outcome.as_deref().into(),
                verdict.violation.as_deref().into(),
                Value::Text(&verdict.waiting.join("\n")),
            ],
        )?;
        Ok(())
    }
}

/// The advisory lock key of tracker `name`: FNV-1a of the name, so trackers of different
/// sagas on one database do not wait for each other.
fn lock_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Whether table `table` has column `column`.
fn has_column(tx: &mut dyn Tx, table: &str, column: &str) -> Result<bool, StoreError> {
    let sql = if tx.kind() == "postgres" {
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
    } else {
        "SELECT 1 FROM pragma_table_info($1) WHERE name = $2"
    };
    Ok(tx.query_opt(sql, &[Value::Text(table), Value::Text(column)])?.is_some())
}

/// Migrates events table `events` of a store written before the `ce_id` column (see the
/// module's documentation): adds it, keeps each row's id as written there, and keys each
/// row by its Herald id as [`Metadata::id`](herald_bus::Metadata::id) gives it. A row
/// whose Herald id another row has already (one event recorded under two spellings of its
/// UUID) keeps its old key.
fn rekey_events<S: TrackedSaga>(tx: &mut dyn Tx, events: &str) -> Result<(), StoreError> {
    tx.batch(&format!("ALTER TABLE {events} ADD COLUMN ce_id TEXT; UPDATE {events} SET ce_id = event_id"))?;
    let rows = tx.query(&format!("SELECT event_id, source FROM {events}"), &[])?;
    for row in &rows {
        let (written, source) = (row.text(0)?, row.text(1)?);
        let key = herald_id(source, written).to_string();
        if key == written || tx.query_opt(&format!("SELECT 1 FROM {events} WHERE event_id = $1"), &[Value::Text(&key)])?.is_some() {
            continue;
        }
        tx.execute(&format!("UPDATE {events} SET event_id = $2 WHERE event_id = $1"), &[Value::Text(written), Value::Text(&key)])?;
    }
    // PostgreSQL expanded the live view's `SELECT *` when it was created: re-create it with
    // the new column (SQLite expands it at each query). A version not yet live gets its
    // view when it is swapped in.
    if tx.kind() == "postgres" {
        let live = herald_projector::position::live_version(tx, S::NAME)?.map(|(v, _)| herald_projector::store::versioned("saga_events", v));
        if live.as_deref() == Some(events) {
            tx.batch(&format!("CREATE OR REPLACE VIEW saga_events AS SELECT * FROM {events}"))?;
        }
    }
    Ok(())
}

/// The UUID [`Metadata`](herald_bus::Metadata) gives an event with `ce_id` `written` from
/// `source`: the `ce_id` when it is a UUID (in any form), else
/// [`Metadata::id_of`](herald_bus::Metadata::id_of).
fn herald_id(source: &str, written: &str) -> uuid::Uuid {
    uuid::Uuid::try_parse(written).unwrap_or_else(|_| herald_bus::Metadata::id_of(source, written))
}

/// Every recorded event of saga `id` from table (or view) `table`, in time order.
pub(crate) fn saga_events(tx: &mut dyn Tx, table: &str, id: &str) -> Result<Vec<TrackedEvent>, StoreError> {
    let rows = tx.query(&format!("SELECT {EVENT_COLUMNS} FROM {table} WHERE correlation_id = $1 ORDER BY time_ms, topic, kafka_partition, kafka_offset"), &[Value::Text(id)])?;
    rows.iter().map(event_of).collect()
}

fn event_of(row: &Row) -> Result<TrackedEvent, StoreError> {
    Ok(TrackedEvent {
        event_id: row.text(0)?.to_owned(),
        correlation_id: row.text(1)?.to_owned(),
        causation_id: row.text(2).ok().map(str::to_owned),
        event_type: row.text(3)?.to_owned(),
        source: row.text(4)?.to_owned(),
        subject: row.text(5)?.to_owned(),
        time: millis(row.int(6)?),
        topic: row.text(7)?.to_owned(),
        partition: i32::try_from(row.int(8)?).map_err(|e| StoreError::Type(e.to_string()))?,
        offset: row.int(9)?,
    })
}

/// A time from milliseconds since the epoch (the epoch itself when out of range).
pub(crate) fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::UNIX_EPOCH)
}
