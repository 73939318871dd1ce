//! The relay: sends outbox rows to Kafka in order per aggregate, then deletes them.
//!
//! # A batch
//! 1. Read up to `batch_size` rows of the owned, ready buckets, in `seq` order
//!    ([`Step::Read`]).
//! 2. Hand them to the idempotent producer in that order (`enable.idempotence=true`,
//!    `acks=all`, the bus's [`Publisher`]), key = aggregate id, the stored value and
//!    headers unchanged ([`Step::Produced`]). An aggregate whose row could not be queued
//!    gets no later row in this batch.
//! 3. Wait for every acknowledgement ([`Step::Acknowledged`]).
//! 4. Delete the acknowledged rows ([`Step::Marked`]). Rows whose delivery failed stay, and
//!    are sent again by the next batch, with their event ids.
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
//! See [`ownership`](self::ownership): buckets owned through session-level advisory locks,
//! a fair share each, a takeover delay after a relay vanished. A relay whose PostgreSQL
//! session ends stops relaying (every read and delete goes through that session, so it
//! cannot read rows of a bucket it no longer owns), reconnects with backoff and takes
//! buckets again.
//!
//! # Order
//! Within a bucket, rows are sent in `seq` order, and the outbox keeps one aggregate's
//! `seq` in commit order ([`Outbox::publish`](crate::Outbox::publish) locks the
//! aggregate until the transaction ends). The idempotent producer keeps that order in
//! the partition, unless a delivery fails after later ones of the same partition
//! succeeded (a timeout after `delivery_timeout`, or a fatal producer error): the failed
//! row is then sent again after them. The bus's publisher has the same limit.

mod fault;
mod health;
mod options;
mod ownership;

pub use fault::{CrashAt, FaultHook, Step};
pub use health::RelayHealth;
pub use options::RelayOptions;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald_bus::publisher::Record;
use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
use rdkafka::message::{Header, OwnedHeaders};
use tokio::time::Instant;
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

struct Metrics {
    relayed: metrics::Counter,
    failures: metrics::Counter,
    delay: metrics::Histogram,
    batch: metrics::Histogram,
    owned: metrics::Gauge,
}

/// One row read from the outbox.
struct Row {
    seq: i64,
    id: Uuid,
    aggregate: String,
    created: SystemTime,
    record: Record,
}

/// What became of a batch.
struct Outcome {
    read: usize,
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
        let label = [("table", table.name().to_owned())];
        let metrics = Metrics {
            relayed: metrics::counter!("herald_outbox_relayed_total", &label),
            failures: metrics::counter!("herald_outbox_relay_failures_total", &label),
            delay: metrics::histogram!("herald_outbox_relay_delay_seconds", &label),
            batch: metrics::histogram!("herald_outbox_relay_batch_seconds", &label),
            owned: metrics::gauge!("herald_outbox_owned_buckets", &label),
        };
        Ok(Relay { pg, table, publisher, options, health: Arc::default(), metrics })
    }

    /// Live state for `/health`.
    pub fn health(&self) -> Arc<RelayHealth> {
        self.health.clone()
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
                opened = Session::open(&self.pg, &self.table, &self.options.instance) => opened,
            };
            let stopped = match opened {
                Ok(mut session) => {
                    self.health.set_connected(true);
                    let served = self.serve(&mut session, &mut shutdown, &mut backoff).await;
                    self.health.set_connected(false);
                    self.metrics.owned.set(0.0);
                    match served {
                        Ok(()) => {
                            if let Err(e) = session.release_all().await {
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

    /// Relays on one session until shutdown (`Ok`) or a database error (`Err`).
    async fn serve(&self, session: &mut Session, shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>, backoff: &mut Duration) -> Result<(), tokio_postgres::Error> {
        let mut next_rebalance = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_rebalance {
                session.rebalance(self.options.takeover_delay).await?;
                if session.owned() == 0 {
                    // Nothing to relay (more relays than buckets): connected is healthy.
                    self.health.ok();
                }
                self.health.set_owned(session.owned());
                self.metrics.owned.set(session.owned() as f64);
                next_rebalance = now + self.options.rebalance_interval;
            }
            let ready = session.ready(Instant::now());
            let mut full = false;
            if !ready.is_empty() {
                let outcome = self.relay_batch(session, &ready).await?;
                *backoff = Duration::from_millis(100);
                full = outcome.read as i64 >= self.options.batch_size;
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
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(()),
                _ = session.woken.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if session.client.is_closed() {
                // The next statement reports why.
                session.client.batch_execute("SELECT 1").await?;
            }
        }
    }

    /// Reads, sends, awaits and deletes one batch of `buckets`' rows.
    async fn relay_batch(&self, session: &Session, buckets: &[i32]) -> Result<Outcome, tokio_postgres::Error> {
        let started = std::time::Instant::now();
        let t = self.table.name();
        let rows = session
            .client
            .query(
                &format!(
                    "SELECT seq, event_id, topic, aggregate, payload, header_names, header_values, created_at
                     FROM {t} WHERE bucket = ANY($1) ORDER BY seq LIMIT $2"
                ),
                &[&buckets, &self.options.batch_size],
            )
            .await?;
        let read = rows.len();
        if read == 0 {
            self.health.ok();
            return Ok(Outcome { read });
        }
        let mut batch = Vec::with_capacity(read);
        for row in rows {
            batch.push(read_row(&row)?);
        }
        self.fault(Step::Read);
        // Queue in seq order; an aggregate whose row could not be queued sends nothing
        // more in this batch, so its order holds.
        let mut blocked: HashSet<String> = HashSet::new();
        let mut pending = Vec::with_capacity(batch.len());
        let mut failures = Vec::new();
        for row in batch {
            if blocked.contains(&row.aggregate) {
                continue;
            }
            match self.publisher.enqueue(row.record.clone()).await {
                Ok(delivery) => pending.push((row, delivery)),
                Err(e) => {
                    failures.push(format!("seq {} ({}): {e}", row.seq, row.id));
                    blocked.insert(row.aggregate.clone());
                }
            }
        }
        self.fault(Step::Produced);
        let mut delivered = Vec::with_capacity(pending.len());
        let mut delays = Vec::with_capacity(pending.len());
        let mut fatal = false;
        for (row, delivery) in pending {
            match delivery.await {
                Ok(_) => {
                    delays.push(SystemTime::now().duration_since(row.created).unwrap_or_default());
                    delivered.push(row.seq);
                }
                Err(e) => {
                    fatal |= e.is_fatal();
                    failures.push(format!("seq {} ({}): {e}", row.seq, row.id));
                }
            }
        }
        self.fault(Step::Acknowledged);
        if !delivered.is_empty() {
            session.client.execute(&format!("DELETE FROM {t} WHERE seq = ANY($1)"), &[&delivered]).await?;
        }
        self.fault(Step::Marked);
        self.metrics.relayed.increment(delivered.len() as u64);
        for delay in delays {
            self.metrics.delay.record(delay.as_secs_f64());
        }
        self.metrics.batch.record(started.elapsed().as_secs_f64());
        self.health.add_relayed(delivered.len() as u64);
        if failures.is_empty() {
            self.health.ok();
        } else {
            self.metrics.failures.increment(failures.len() as u64);
            let summary = format!("{} rows not relayed (sent again later); first: {}", failures.len(), failures[0]);
            tracing::warn!("{summary}");
            self.health.failed(summary);
            if fatal {
                // The rows stay; a fresh producer sends them again in order.
                if let Err(e) = self.publisher.reset(self.options.delivery_timeout).await {
                    tracing::error!(error = %e, "producer reset failed");
                }
            }
            // Do not spin on a broker that refuses everything.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Outcome { read })
    }

    fn fault(&self, step: Step) {
        if let Some(hook) = &self.options.fault {
            hook(step);
        }
    }
}

fn read_row(row: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    let seq: i64 = row.try_get(0)?;
    let id: Uuid = row.try_get(1)?;
    let topic: String = row.try_get(2)?;
    let aggregate: String = row.try_get(3)?;
    let payload: Vec<u8> = row.try_get(4)?;
    let names: Vec<String> = row.try_get(5)?;
    let values: Vec<Option<Vec<u8>>> = row.try_get(6)?;
    let created: SystemTime = row.try_get(7)?;
    let headers = names
        .iter()
        .zip(&values)
        .fold(OwnedHeaders::new_with_capacity(names.len()), |acc, (key, value)| acc.insert(Header { key: key.as_str(), value: value.as_deref() }));
    let record = Record::new(topic, aggregate.as_bytes(), payload, headers);
    Ok(Row { seq, id, aggregate, created, record })
}
