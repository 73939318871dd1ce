//! Reading the tracker's store: [`list`] sagas and [`show`] one with its timeline.
//!
//! These read the `sagas` and `saga_events` views (the live version), in a read-only
//! transaction, and assess each saga at the time given ([`crate::state::assess`]).
//! They block: call them from a blocking thread in async code.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_projector::store::Row;
use herald_projector::{Connection, StoreError, Value};
use serde::{Deserialize, Serialize};

use crate::event::TrackedEvent;
use crate::projection::{millis, saga_events};
use crate::state::{assess, Assessment, State};
use crate::verdict::{Phase, Verdict};

/// Which sagas [`list`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Only stuck ones ([`Assessment::stuck`]).
    pub stuck: bool,
    /// Only those in this state.
    pub state: Option<State>,
    /// Only those that started longer ago than this.
    pub older_than: Option<Duration>,
    /// No progress for longer than this makes a saga stuck.
    pub stuck_after: Duration,
    /// At most this many, the most recently active first.
    pub limit: usize,
}

impl Default for Filter {
    /// Every saga, stuck after 5 minutes without progress, at most 1000.
    fn default() -> Self {
        Filter { stuck: false, state: None, older_than: None, stuck_after: DEFAULT_STUCK_AFTER, limit: 1000 }
    }
}

/// Default stuck threshold: 5 minutes without progress.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(300);

/// One saga, assessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The saga's id: its correlation id.
    pub id: String,
    /// The aggregate id of its first event (the order id in the shop's saga).
    pub subject: String,
    /// Its state now.
    pub state: State,
    /// Stuck: no progress, or a compensation that never came.
    pub stuck: bool,
    /// Why it is failed, stuck or still running.
    pub reason: Option<String>,
    /// Its outcome event type, once seen.
    pub outcome: Option<String>,
    /// Time of its first event.
    #[serde(with = "crate::event::rfc3339")]
    pub started_at: DateTime<Utc>,
    /// Time of its last event.
    #[serde(with = "crate::event::rfc3339")]
    pub last_event_at: DateTime<Utc>,
    /// Events recorded.
    pub events: i64,
}

/// One saga with its timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The saga.
    #[serde(flatten)]
    pub summary: Summary,
    /// Its events, in time order.
    pub timeline: Vec<TrackedEvent>,
}

const SUMMARY_COLUMNS: &str = "correlation_id, subject, first_ms, last_ms, events, phase, outcome, violation, waiting";

/// The sagas matching `filter`, most recently active first, assessed at `now`.
pub fn list(conn: &mut dyn Connection, filter: &Filter, now: DateTime<Utc>) -> Result<Vec<Summary>, StoreError> {
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE 1 = 1");
    let mut params = Vec::new();
    let quiet_since = before(now, filter.stuck_after);
    if filter.stuck {
        // Only running sagas quiet for longer than the threshold can be stuck.
        params.push(Value::Int(quiet_since));
        sql.push_str(&format!(" AND phase = 'running' AND last_ms < ${}", params.len()));
    }
    match filter.state {
        None => {}
        Some(State::Completed) => sql.push_str(" AND phase = 'completed'"),
        Some(State::Compensated) => sql.push_str(" AND phase = 'compensated'"),
        Some(State::Running) => sql.push_str(" AND phase = 'running'"),
        Some(State::Stuck) => sql.push_str(&format!(" AND phase = 'running' AND outcome IS NULL AND last_ms < {quiet_since}")),
        // Failed by a violation, or by a compensation that never came.
        Some(State::Failed) => sql.push_str(&format!(" AND (phase = 'failed' OR (phase = 'running' AND outcome IS NOT NULL AND last_ms < {quiet_since}))")),
    }
    if let Some(age) = filter.older_than {
        params.push(Value::Int(before(now, age)));
        sql.push_str(&format!(" AND first_ms < ${}", params.len()));
    }
    sql.push_str(&format!(" ORDER BY last_ms DESC, correlation_id LIMIT {}", filter.limit));
    let mut tx = conn.read()?;
    let rows = tx.query(&sql, &params)?;
    tx.rollback()?;
    let all = rows.iter().map(|r| summary_of(r, now, filter.stuck_after)).collect::<Result<Vec<_>, _>>()?;
    Ok(all.into_iter().filter(|s| (!filter.stuck || s.stuck) && filter.state.is_none_or(|state| s.state == state)).collect())
}

/// Saga `id` (a correlation id, or else the most recent saga of that subject, e.g. an
/// order id) with its timeline, assessed at `now`; `None` when unknown.
pub fn show(conn: &mut dyn Connection, id: &str, now: DateTime<Utc>, stuck_after: Duration) -> Result<Option<Detail>, StoreError> {
    let mut tx = conn.read()?;
    let by_id = tx.query_opt(&format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE correlation_id = $1"), &[Value::Text(id)])?;
    let row = match by_id {
        Some(row) => Some(row),
        None => tx.query_opt(&format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE subject = $1 ORDER BY first_ms DESC LIMIT 1"), &[Value::Text(id)])?,
    };
    let Some(row) = row else {
        tx.rollback()?;
        return Ok(None);
    };
    let summary = summary_of(&row, now, stuck_after)?;
    let timeline = saga_events(tx.as_tx(), "saga_events", &summary.id)?;
    tx.rollback()?;
    Ok(Some(Detail { summary, timeline }))
}

/// How many sagas are in each state at `now` (every state listed, zeros included).
///
/// Counted by the database in one pass (the `WHERE` clauses of [`list`], which
/// [`assess`] agrees with): no saga is loaded, however many there are.
pub fn counts(conn: &mut dyn Connection, now: DateTime<Utc>, stuck_after: Duration) -> Result<Vec<(State, u64)>, StoreError> {
    // A running saga quiet since before $1 is stuck (no outcome) or failed (an outcome
    // whose compensations or required steps never came); an unknown phase counts as failed.
    let sql = "SELECT \
        COALESCE(SUM(CASE WHEN phase = 'running' AND last_ms >= $1 THEN 1 ELSE 0 END), 0), \
        COALESCE(SUM(CASE WHEN phase = 'completed' THEN 1 ELSE 0 END), 0), \
        COALESCE(SUM(CASE WHEN phase = 'compensated' THEN 1 ELSE 0 END), 0), \
        COALESCE(SUM(CASE WHEN phase NOT IN ('running', 'completed', 'compensated') OR (phase = 'running' AND outcome IS NOT NULL AND last_ms < $1) THEN 1 ELSE 0 END), 0), \
        COALESCE(SUM(CASE WHEN phase = 'running' AND outcome IS NULL AND last_ms < $1 THEN 1 ELSE 0 END), 0) \
        FROM sagas";
    let mut tx = conn.read()?;
    let row = tx.query_opt(sql, &[Value::Int(before(now, stuck_after))])?;
    tx.rollback()?;
    let row = row.ok_or_else(|| StoreError::Type("no row from a count".into()))?;
    [State::Running, State::Completed, State::Compensated, State::Failed, State::Stuck]
        .into_iter()
        .enumerate()
        .map(|(i, state)| Ok((state, u64::try_from(row.int(i)?).unwrap_or(0))))
        .collect()
}

fn before(now: DateTime<Utc>, d: Duration) -> i64 {
    now.timestamp_millis().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn summary_of(row: &Row, now: DateTime<Utc>, stuck_after: Duration) -> Result<Summary, StoreError> {
    let phase = Phase::parse(row.text(5)?).ok_or_else(|| StoreError::Type(format!("unknown saga phase {:?}", row.text(5))))?;
    let outcome = row.text(6).ok().map(str::to_owned);
    let waiting = row.text(8)?;
    let verdict = Verdict {
        phase,
        outcome: outcome.clone(),
        violation: row.text(7).ok().map(str::to_owned),
        waiting: waiting.split('\n').filter(|w| !w.is_empty()).map(str::to_owned).collect(),
    };
    let last = millis(row.int(3)?);
    let Assessment { state, stuck, reason } = assess(&verdict, last, now, stuck_after);
    Ok(Summary {
        id: row.text(0)?.to_owned(),
        subject: row.text(1)?.to_owned(),
        state,
        stuck,
        reason,
        outcome,
        started_at: millis(row.int(2)?),
        last_event_at: last,
        events: row.int(4)?,
    })
}
