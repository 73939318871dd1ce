//! The relay: sends outbox rows to Kafka in order per aggregate, then deletes them.
//!
//! # A batch
//! 1. Read up to `batch_size` rows of the owned, ready buckets, in `seq` order, and no
//!    more than about `batch_bytes` of payload ([`Step::Read`]): the oldest row of each
//!    *held* aggregate whose retry is due, and the rows of the other aggregates.
//! 2. Hand them to the idempotent producer in that order (`enable.idempotence=true`,
//!    `acks=all`, the bus's [`Publisher`]), key = aggregate id, the stored value and
//!    headers unchanged ([`Step::Produced`]). An aggregate whose row could not be queued
//!    gets no later row in this batch.
//! 3. Wait for every acknowledgement ([`Step::Acknowledged`]).
//! 4. Delete the acknowledged rows ([`Step::Marked`]), except those queued after a row of
//!    their aggregate that failed. Rows that stay are sent again later, with their event
//!    ids.
//!
//! # Failed rows: held aggregates
//! A row that could not be queued (larger than the relay's `message.max.bytes`, or
//! malformed: a null header name, header names and values of different counts, a `ce_id`
//! header other than the row's `event_id`; a row without `ce_id` is sent with its
//! `event_id` as `ce_id`) or whose delivery failed (timed out, refused by the topic, not
//! authorized, a fatal producer error) *holds* its aggregate in this relay: none of the aggregate's later rows is
//! deleted in that batch, and none is read again until the failed row is delivered.
//! Until then each batch reads only the other aggregates, and the failed row alone is
//! sent again after a backoff (200 ms, doubling per failure, at most `max_backoff`), for
//! as long as it fails: it is never skipped, so order per aggregate holds. While any
//! aggregate is held the relay reports unhealthy ([`RelayHealth::held_aggregates`], the
//! `herald_outbox_held_aggregates` gauge, the failure in `last_error`). A permanent
//! failure needs an operator: raise the limit (the topic's `max.message.bytes`, the
//! relay's `message.max.bytes`), grant the ACL, or delete the row knowingly; the relay
//! picks that up at the next retry. With more than [`MAX_HELD`] aggregates held, the
//! relay reads no new rows, only retries. Holds live in the relay's session: after a
//! reconnect or a bucket handed over, the rows are read in `seq` order again and the same
//! rules apply.
//!
//! A crash anywhere before 4 sends the rows again later, with the same `ce_id`; a crash
//! after it loses nothing. Rows are deleted rather than marked sent: PostgreSQL writes a
//! new row version for an `UPDATE` as for a `DELETE`, so marking saves nothing, and a
//! deleted row leaves the table (and the relay's index scan) the size of the backlog, with
//! no retention job; the history is the topic.
//!
//! # Waking up
//! The insert trigger `NOTIFY`s the table's channel at commit; the relay `LISTEN`s on its
//! session and wakes at once. Without a notification it looks every `poll_interval`
//! anyway (a notification sent while it was reconnecting is lost). After a full batch it
//! goes on at once.
//!
//! # Several relays
//! See the `ownership` module: buckets owned through session-level advisory locks,
//! a fair share each, a takeover delay after a relay vanished. A relay whose PostgreSQL
//! session ends stops relaying (every read and delete goes through that session, so it
//! cannot read rows of a bucket it no longer owns), reconnects with backoff and takes
//! buckets again. So does a relay whose statement gets no answer within
//! `statement_timeout` (a stuck connection or server, a lock wait); the connection
//! settings of [`config`](crate::config) drop a dead connection at the TCP level too.
//!
//! # Order
//! Within a bucket, rows are sent in `seq` order, and the outbox keeps one aggregate's
//! `seq` in commit order ([`Outbox::publish`](crate::Outbox::publish) locks the
//! aggregate until the transaction ends). The idempotent producer keeps that order in the
//! partition while deliveries succeed. When one fails, records queued after it may still
//! be written (librdkafka bumps the producer epoch and goes on): so a later row of the
//! same aggregate can reach the topic *before* the failed one. The relay does not delete
//! such a row; it sends it again after the failed one was delivered. What holds, per
//! aggregate: each row's last copy on the topic comes after every earlier row's
//! delivery, so the topic holds the aggregate's events in `seq` order as a subsequence;
//! and the order of first delivery is the `seq` order unless a delivery failed (or a
//! relay crashed, which repeats a suffix). A consumer that must see strict order keeps
//! the position of the last event applied per aggregate (for example the event's
//! version) rather than deduplicating by `ce_id` alone.

mod fault;
mod health;
mod options;
mod ownership;

#[cfg(feature = "crash-points")]
pub use fault::CrashAt;
pub use fault::{FaultHook, Step};
pub use health::RelayHealth;
pub use options::RelayOptions;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald_bus::publisher::Record;
use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
use futures::TryStreamExt;
use rdkafka::message::{Header, OwnedHeaders};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::Config;
use uuid::Uuid;

use crate::{OutboxError, OutboxTable};
use ownership::Session;

/// Relays one outbox table to Kafka. See the [module docs](self).
///
/// ```no_run
/// # async fn run() -> Result<(), herald_outbox::OutboxError> {
/// use herald_outbox::{relay::{Relay, RelayOptions}, OutboxTable};
/// let table = OutboxTable::new("shop_outbox")?;
/// let pg = herald_outbox::config("postgres://herald@127.0.0.1:55432/herald")?;
/// let relay = Relay::new(pg, table, &herald_bus::KafkaConfig::new("127.0.0.1:9092"), RelayOptions::default())?;
/// let health = relay.health(); // for /health
/// relay.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct Relay {
    pg: Config,
    table: OutboxTable,
    publisher: Publisher,
    options: RelayOptions,
    health: Arc<RelayHealth>,
    metrics: Metrics,
}

/// The relay's metrics, looked up at each use (once per batch at most), not once in
/// [`Relay::new`]: a relay built before the program installed its metrics recorder
/// would record into no recorder for ever.
struct Metrics {
    label: [(&'static str, String); 1],
}

impl Metrics {
    fn relayed(&self) -> metrics::Counter {
        metrics::counter!("herald_outbox_relayed_total", &self.label)
    }
    fn failures(&self) -> metrics::Counter {
        metrics::counter!("herald_outbox_relay_failures_total", &self.label)
    }
    fn delay(&self) -> metrics::Histogram {
        metrics::histogram!("herald_outbox_relay_delay_seconds", &self.label)
    }
    fn batch(&self) -> metrics::Histogram {
        metrics::histogram!("herald_outbox_relay_batch_seconds", &self.label)
    }
    fn owned(&self) -> metrics::Gauge {
        metrics::gauge!("herald_outbox_owned_buckets", &self.label)
    }
    fn held(&self) -> metrics::Gauge {
        metrics::gauge!("herald_outbox_held_aggregates", &self.label)
    }
}

/// One row read from the outbox (its record goes to the producer separately).
struct Row {
    seq: i64,
    id: Uuid,
    aggregate: String,
    created: SystemTime,
}

/// What became of a batch.
struct Outcome {
    /// More rows may be waiting: the batch was full, or cut by `batch_bytes`.
    more: bool,
}

/// Aggregates held at once beyond which a relay reads no new rows and only retries the
/// held ones (a broker refusing everything would otherwise hold every aggregate of the
/// backlog, one batch after another).
pub const MAX_HELD: usize = 10_000;

/// The aggregates this session holds back (see the [module docs](self)).
#[derive(Default)]
struct Held {
    holds: HashMap<String, Hold>,
}

/// Why and until when an aggregate is held.
struct Hold {
    /// The aggregate's oldest row not delivered: the one that failed.
    seq: i64,
    bucket: i32,
    /// Failures of that row in a row.
    failures: u32,
    retry_at: Instant,
}

impl Held {
    fn len(&self) -> usize {
        self.holds.len()
    }

    fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// Holds `aggregate` at its row `seq` (again, if it was held), retried after a backoff.
    fn hold(&mut self, aggregate: String, seq: i64, bucket: i32, max_backoff: Duration) {
        let hold = self.holds.entry(aggregate).or_insert(Hold { seq, bucket, failures: 0, retry_at: Instant::now() });
        hold.seq = seq;
        hold.failures = hold.failures.saturating_add(1);
        let backoff = Duration::from_millis(200).saturating_mul(1 << (hold.failures - 1).min(16)).min(max_backoff);
        hold.retry_at = Instant::now() + backoff;
    }

    /// The held rows of `buckets` (sorted) due for a retry at `now`, at most `limit`.
    fn due(&self, buckets: &[i32], now: Instant, limit: usize) -> Vec<i64> {
        self.holds.values().filter(|h| h.retry_at <= now && buckets.binary_search(&h.bucket).is_ok()).map(|h| h.seq).take(limit).collect()
    }

    /// The next retry after `now`, if any.
    fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.holds.values().map(|h| h.retry_at).filter(|at| *at > now).min()
    }
}

impl Relay {
    /// A relay of `table`, producing with `kafka` (its properties pass through; the relay
    /// sets `message.timeout.ms` from [`RelayOptions::delivery_timeout`], and the bus's
    /// defaults give `enable.idempotence=true`, `acks=all`). Refuses options that fail
    /// [`RelayOptions::validate`] ([`OutboxError::InvalidOption`]).
    pub fn new(pg: Config, table: OutboxTable, kafka: &KafkaConfig, options: RelayOptions) -> Result<Self, OutboxError> {
        options.validate()?;
        let kafka = kafka.clone().set("message.timeout.ms", options.delivery_timeout.as_millis().to_string());
        let publisher = Publisher::new(&kafka, PublisherOptions::new(format!("herald-outbox:{}", table.name())))?;
        let metrics = Metrics { label: [("table", table.name().to_owned())] };
        Ok(Relay { pg, table, publisher, options, health: Arc::default(), metrics })
    }

    /// Live state for `/health`.
    pub fn health(&self) -> Arc<RelayHealth> {
        self.health.clone()
    }

    /// Creates the outbox table and its companions if they are missing
    /// ([`OutboxTable::ensure_schema`]), trying again every 500 ms for `within` while
    /// PostgreSQL cannot be reached (not up yet, say); meanwhile [`Relay::health`] reports
    /// unhealthy with the reason. Serve `/health` before calling it.
    pub async fn ensure_schema(&self, within: Duration) -> Result<(), OutboxError> {
        let deadline = Instant::now() + within;
        loop {
            let attempt = async {
                let mut client = crate::connect(&self.pg).await?;
                self.table.ensure_schema(&mut client).await
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::warn!(error = %e, "creating the outbox schema failed; retrying");
                    self.health.failed(format!("creating the outbox schema: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    self.health.failed(format!("creating the outbox schema: {e}"));
                    return Err(e);
                }
            }
        }
    }

    /// Relays until `shutdown` completes: then finishes the batch in hand, gives up its
    /// buckets (marked released, so the next owner starts at once), and flushes the
    /// producer. Database and broker trouble is retried for as long as it lasts (see
    /// [`RelayHealth`]); only creating the schema fails the call.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), OutboxError> {
        let mut shutdown = std::pin::pin!(shutdown);
        self.health.set_running(true);
        let mut backoff = Duration::from_millis(100);
        loop {
            let opened = tokio::select! {
                _ = &mut shutdown => break,
                opened = self.answered(Session::open(&self.pg, &self.table, &self.options.instance)) => opened,
            };
            let stopped = match opened {
                Ok(mut session) => {
                    self.health.set_connected(true);
                    let served = self.serve(&mut session, &mut shutdown, &mut backoff).await;
                    self.health.set_connected(false);
                    self.metrics.owned().set(0.0);
                    self.metrics.held().set(0.0);
                    match served {
                        Ok(()) => {
                            if let Err(e) = self.answered(session.release_all()).await {
                                tracing::warn!(error = %e, "could not release the buckets (they are freed as the session ends)");
                            }
                            true
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "relay session failed; reconnecting");
                            self.health.failed(e.to_string());
                            false
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to PostgreSQL; retrying");
                    self.health.failed(e.to_string());
                    false
                }
            };
            if stopped {
                break;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
        self.health.set_running(false);
        if let Err(e) = self.publisher.flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "producer flush at shutdown failed");
        }
        Ok(())
    }

    /// Relays on one session until shutdown (`Ok`) or a database error or a statement
    /// without an answer (`Err`).
    async fn serve(&self, session: &mut Session, shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>, backoff: &mut Duration) -> Result<(), OutboxError> {
        let mut next_rebalance = Instant::now();
        let mut held = Held::default();
        loop {
            let now = Instant::now();
            if now >= next_rebalance {
                self.answered(session.rebalance(self.options.takeover_delay)).await?;
                // A bucket given up takes its holds along: its next owner reads in order.
                held.holds.retain(|_, hold| session.owns(hold.bucket));
                self.set_held(&held);
                if session.owned() == 0 {
                    // Nothing to relay (more relays than buckets): connected is healthy.
                    self.health.ok();
                }
                self.health.set_owned(session.owned());
                self.metrics.owned().set(session.owned() as f64);
                next_rebalance = now + self.options.rebalance_interval;
            }
            let ready = session.ready(Instant::now());
            self.health.set_waiting(session.owned() - ready.len());
            let mut full = false;
            if !ready.is_empty() {
                let outcome = self.relay_batch(session, &ready, &mut held).await?;
                *backoff = Duration::from_millis(100);
                full = outcome.more;
            }
            if full {
                // More may be waiting: go on at once, unless asked to stop.
                if futures::FutureExt::now_or_never(shutdown.as_mut()).is_some() {
                    return Ok(());
                }
                continue;
            }
            let mut wake = Instant::now() + self.options.poll_interval;
            wake = wake.min(next_rebalance);
            if let Some(at) = session.next_ready(Instant::now()) {
                wake = wake.min(at);
            }
            if let Some(at) = held.next_retry(Instant::now()) {
                wake = wake.min(at);
            }
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(()),
                _ = session.woken.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if session.client.is_closed() {
                // The next statement reports why.
                self.answered(session.client.batch_execute("SELECT 1")).await?;
            }
        }
    }

    /// Reads, sends, awaits and deletes one batch of `buckets`' rows; updates `held`.
    async fn relay_batch(&self, session: &Session, buckets: &[i32], held: &mut Held) -> Result<Outcome, OutboxError> {
        let started = std::time::Instant::now();
        let t = self.table.name();
        let due = held.due(buckets, Instant::now(), self.options.batch_size as usize);
        let excluded: Vec<&str> = held.holds.keys().map(String::as_str).collect();
        let fresh: i64 = if held.len() >= MAX_HELD { 0 } else { self.options.batch_size };
        // The due retries and the other aggregates' oldest rows, in seq order, cut after
        // `batch_bytes` of payload (the row that crosses it included, so one always goes).
        let sql = format!(
            "SELECT seq, event_id, topic, aggregate, payload, header_names, header_values, created_at, candidates FROM (
                 SELECT c.*, sum(octet_length(payload)) OVER (ORDER BY seq) AS running, count(*) OVER () AS candidates FROM (
                     SELECT * FROM {t} WHERE bucket = ANY($1) AND seq = ANY($2)
                     UNION ALL
                     (SELECT * FROM {t} WHERE bucket = ANY($1) AND aggregate <> ALL($3) ORDER BY seq LIMIT $4)
                 ) c ORDER BY seq LIMIT $5
             ) b WHERE running - octet_length(payload) < $6 ORDER BY seq"
        );
        let params: [&(dyn ToSql + Sync); 6] = [&buckets, &due, &excluded, &fresh, &self.options.batch_size, &self.options.batch_bytes];
        // Rows are converted as they arrive: the batch is held once, not twice.
        let (batch, candidates) = self
            .answered(async {
                let rows = session.client.query_raw(&sql, params).await?;
                let mut rows = std::pin::pin!(rows);
                let mut batch = Vec::new();
                let mut candidates = 0i64;
                while let Some(row) = rows.try_next().await? {
                    candidates = row.try_get(8)?;
                    batch.push(read_row(&row)?);
                }
                Ok((batch, candidates))
            })
            .await?;
        let read = batch.len();
        let cut = (read as i64) < candidates;
        if !cut && !due.is_empty() {
            // A due row that is gone (deleted by hand, or relayed by an earlier owner of
            // its bucket) holds its aggregate no more.
            let due: HashSet<i64> = due.into_iter().collect();
            let returned: HashSet<i64> = batch.iter().map(|(row, _)| row.seq).collect();
            held.holds.retain(|_, hold| !due.contains(&hold.seq) || returned.contains(&hold.seq));
        }
        if read == 0 {
            self.set_held(held);
            if held.is_empty() {
                self.health.ok();
            }
            return Ok(Outcome { more: false });
        }
        self.fault(Step::Read);
        // Queue in seq order; an aggregate whose row could not be queued sends nothing
        // more in this batch. `failed`: each aggregate's oldest row that failed.
        let mut failed: HashMap<String, i64> = HashMap::new();
        let mut pending = Vec::with_capacity(read);
        let mut failures = Vec::new();
        for (row, record) in batch {
            if failed.contains_key(&row.aggregate) {
                continue;
            }
            let record = match record {
                Ok(record) => record,
                Err(why) => {
                    failures.push(format!("seq {} ({}): malformed row: {why}", row.seq, row.id));
                    failed.insert(row.aggregate, row.seq);
                    continue;
                }
            };
            match self.publisher.enqueue(record).await {
                Ok(delivery) => pending.push((row, delivery)),
                Err(e) => {
                    failures.push(format!("seq {} ({}): {e}", row.seq, row.id));
                    failed.insert(row.aggregate, row.seq);
                }
            }
        }
        self.fault(Step::Produced);
        // In seq order: a row queued after a failed row of its aggregate is not deleted,
        // even if acknowledged; it is sent again after the failed one.
        let mut delivered = Vec::with_capacity(pending.len());
        let mut released = Vec::new();
        let mut delays = Vec::with_capacity(pending.len());
        let mut held_back = 0usize;
        let mut fatal = false;
        for (row, delivery) in pending {
            let result = delivery.await;
            let behind_a_failure = failed.get(&row.aggregate).is_some_and(|seq| *seq < row.seq);
            match result {
                Ok(_) if behind_a_failure => held_back += 1,
                Ok(_) => {
                    delays.push(SystemTime::now().duration_since(row.created).unwrap_or_default());
                    delivered.push(row.seq);
                    released.push(row.aggregate);
                }
                Err(e) => {
                    fatal |= e.is_fatal();
                    failures.push(format!("seq {} ({}): {e}", row.seq, row.id));
                    let seq = failed.entry(row.aggregate).or_insert(row.seq);
                    *seq = (*seq).min(row.seq);
                }
            }
        }
        self.fault(Step::Acknowledged);
        if !delivered.is_empty() {
            self.answered(session.client.execute(&format!("DELETE FROM {t} WHERE seq = ANY($1)"), &[&delivered])).await?;
        }
        self.fault(Step::Marked);
        // Only a held aggregate's oldest row is read, so its delivery ends the hold.
        for aggregate in released {
            held.holds.remove(&aggregate);
        }
        for (aggregate, seq) in failed {
            let bucket = self.table.bucket_of(&aggregate);
            held.hold(aggregate, seq, bucket, self.options.max_backoff);
        }
        self.set_held(held);
        self.metrics.relayed().increment(delivered.len() as u64);
        for delay in delays {
            self.metrics.delay().record(delay.as_secs_f64());
        }
        self.metrics.batch().record(started.elapsed().as_secs_f64());
        self.health.add_relayed(delivered.len() as u64);
        if failures.is_empty() {
            if held.is_empty() {
                self.health.ok();
            }
        } else {
            self.metrics.failures().increment(failures.len() as u64);
            self.health.add_failures(failures.len() as u64);
            let summary = format!(
                "{} rows not relayed, {held_back} held back behind them, {} aggregates held (retried in order); first: {}",
                failures.len(),
                held.len(),
                failures[0]
            );
            tracing::warn!("{summary}");
            self.health.failed(summary);
            if fatal {
                // The rows stay; a fresh producer sends them again in order.
                if let Err(e) = self.publisher.reset(self.options.delivery_timeout).await {
                    tracing::error!(error = %e, "producer reset failed");
                }
            }
        }
        Ok(Outcome { more: cut || candidates >= self.options.batch_size })
    }

    /// `statement`'s result, or [`OutboxError::Unanswered`] when PostgreSQL does not answer
    /// within `statement_timeout` (the caller then drops the session).
    async fn answered<T>(&self, statement: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, OutboxError> {
        let limit = self.options.statement_timeout;
        Ok(tokio::time::timeout(limit, statement).await.map_err(|_| OutboxError::Unanswered(limit))??)
    }

    fn set_held(&self, held: &Held) {
        self.health.set_held(held.len());
        self.metrics.held().set(held.len() as f64);
    }

    fn fault(&self, step: Step) {
        if let Some(hook) = &self.options.fault {
            hook(step);
        }
    }
}

/// A row as read, and its record; the record is an error naming what is wrong with a row
/// that cannot be sent as it is (written by hand, not by [`Outbox::publish`](crate::Outbox::publish)):
/// it holds its aggregate as an undeliverable row does, never the whole batch.
fn read_row(row: &tokio_postgres::Row) -> Result<(Row, Result<Record, String>), tokio_postgres::Error> {
    let seq: i64 = row.try_get(0)?;
    let id: Uuid = row.try_get(1)?;
    let aggregate: String = row.try_get(3)?;
    let created: SystemTime = row.try_get(7)?;
    let record = (|| {
        let topic: String = row.try_get(2).map_err(|e| e.to_string())?;
        let payload: Vec<u8> = row.try_get(4).map_err(|e| e.to_string())?;
        let names: Vec<Option<String>> = row.try_get(5).map_err(|e| format!("header_names: {e}"))?;
        let values: Vec<Option<Vec<u8>>> = row.try_get(6).map_err(|e| format!("header_values: {e}"))?;
        record_of(id, topic, &aggregate, payload, &names, &values)
    })();
    Ok((Row { seq, id, aggregate, created }, record))
}

/// The record of a row: its headers as written, `ce_id` the row's `event_id` (added when
/// the row has none). Headers that cannot be sent as written (a null name, names and
/// values of different counts, a `ce_id` other than the row's id) are an error.
fn record_of(id: Uuid, topic: String, aggregate: &str, payload: Vec<u8>, names: &[Option<String>], values: &[Option<Vec<u8>>]) -> Result<Record, String> {
    if names.len() != values.len() {
        return Err(format!("{} header names but {} header values", names.len(), values.len()));
    }
    let id_text = id.to_string();
    let mut has_id = false;
    let mut headers = OwnedHeaders::new_with_capacity(names.len() + 1);
    for (name, value) in names.iter().zip(values) {
        let Some(name) = name else { return Err("a header name is null".to_owned()) };
        if name == herald_bus::envelope::header::ID {
            if value.as_deref() != Some(id_text.as_bytes()) {
                return Err(format!("its {name} header is not its event_id {id}"));
            }
            has_id = true;
        }
        headers = headers.insert(Header { key: name.as_str(), value: value.as_deref() });
    }
    if !has_id {
        headers = headers.insert(Header { key: herald_bus::envelope::header::ID, value: Some(&id_text) });
    }
    Ok(Record::new(topic, aggregate.as_bytes(), payload, headers))
}
