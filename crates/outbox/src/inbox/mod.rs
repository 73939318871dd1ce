//! The inbox: consumed events applied to PostgreSQL exactly once.
//!
//! An [`InboxHandler`] does its work in a PostgreSQL transaction the inbox opens; in the
//! same transaction the inbox records the event's id (`ce_id`) for its consumer name.
//! If the id is there already, the event was applied before (a redelivery after a crash
//! or a rebalance, or the same event published twice by an outbox relay) and the handler
//! is not called. The record and the handler's changes commit together, so each event's
//! effects happen once, however often Kafka delivers it.
//!
//! It runs on herald-bus's consumer (the one consumer runtime): [`Inbox::handler`] turns an
//! inbox handler into a bus [`Handler`], subscribed like any other, with the bus's order
//! per key, retries and dead letters. A database that cannot be reached is reported as
//! [`HandlerError::unavailable`]: the partition waits and retries for as long as the
//! outage lasts, never dead-lettering for it.
//!
//! Two members handling the same event at once (a rebalance) is safe too: the second
//! insert of the id waits for the first transaction and then finds the id.

mod pool;

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use herald_bus::{Envelope, Handler, HandlerError};
use tokio_postgres::{Config, Transaction};

use crate::error::is_transient;
use crate::OutboxError;
use pool::Pool;

/// Work done for one event inside the inbox's transaction.
///
/// Return an error to roll the transaction back (the event is not recorded): transient
/// errors are retried, permanent ones dead-lettered, as for any bus handler. A PostgreSQL
/// error returned with `?` is transient (retried, then dead-lettered); map it with
/// [`pg_error`] so that a lost connection makes the partition wait instead.
///
/// ```
/// use herald_bus::{Envelope, HandlerError};
/// use herald_outbox::inbox::InboxHandler;
/// # herald_bus::family! { #[derive(Debug)] pub enum Payments { Charged(Charged) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Charged { order_id: String, cents: i64 }
/// # impl herald_bus::Event for Charged { const TYPE: &'static str = "Charged"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.order_id } }
///
/// struct Ledger;
///
/// #[async_trait::async_trait]
/// impl InboxHandler<Payments> for Ledger {
///     async fn handle(&self, tx: &tokio_postgres::Transaction<'_>, event: &Envelope<Payments>) -> Result<(), HandlerError> {
///         match &event.event {
///             Payments::Charged(c) => tx
///                 .execute("UPDATE balances SET cents = cents + $2 WHERE order_id = $1", &[&c.order_id, &c.cents])
///                 .await
///                 .map_err(herald_outbox::inbox::pg_error)?,
///         };
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait InboxHandler<F>: Send + Sync + 'static {
    /// Applies `event` in `tx`. Called at most once per event id that commits.
    async fn handle(&self, tx: &Transaction<'_>, event: &Envelope<F>) -> Result<(), HandlerError>;
}

/// A PostgreSQL error as a handler error: [`HandlerError::unavailable`] when it is about
/// the connection or the server's state (the partition waits), transient otherwise.
pub fn pg_error(e: tokio_postgres::Error) -> HandlerError {
    if is_transient(&e) { HandlerError::unavailable(e) } else { HandlerError::transient(e) }
}

/// An inbox table and the connections to it. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    table: String,
    consumer: String,
    insert: String,
}

impl Inner {
    /// Looked up at each use (a PostgreSQL transaction per event dwarfs it), not once in
    /// [`Inbox::new`]: an inbox made before the program installed its metrics recorder
    /// would record into no recorder for ever.
    fn counter(&self, name: &'static str) -> metrics::Counter {
        metrics::counter!(name, "consumer" => self.consumer.clone())
    }
}

impl Inbox {
    /// An inbox in table `table` (created by [`Inbox::ensure_schema`]) for the consumer
    /// named `consumer` (ids are remembered per consumer name, so several consumers can
    /// share a table), with at most `connections` connections (one per partition worker
    /// handling at once is enough).
    pub fn new(config: Config, table: &str, consumer: impl Into<String>, connections: usize) -> Result<Self, OutboxError> {
        crate::OutboxTable::new(table)?;
        let consumer = consumer.into();
        Ok(Inbox {
            inner: Arc::new(Inner {
                pool: Pool::new(config, connections),
                insert: format!("INSERT INTO {table} (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"),
                table: table.to_owned(),
                consumer,
            }),
        })
    }

    /// Creates the inbox table if it is missing: `(consumer, event_id)` as primary key and
    /// when it was handled. Safe to call from many processes at once (it serializes itself
    /// with a transaction-level advisory lock: PostgreSQL's `CREATE TABLE IF NOT EXISTS`
    /// run by several sessions at once can fail on a duplicate key in `pg_type`).
    pub async fn ensure_schema(&self) -> Result<(), OutboxError> {
        let mut client = self.inner.pool.get().await?;
        let tx = client.transaction().await?;
        // Key -1, as OutboxTable::ensure_schema; the class differs from an outbox's.
        tx.execute("SELECT pg_advisory_xact_lock($1, -1)", &[&crate::table::class_of(&self.inner.table, "inbox")]).await?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                consumer text NOT NULL,
                event_id uuid NOT NULL,
                handled_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (consumer, event_id)
            )",
            self.inner.table
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The bus handler that runs `handler` exactly once per event id (see the module docs).
    pub fn handler<F, H>(&self, handler: H) -> InboxRoute<F, H>
    where
        F: Send + Sync + 'static,
        H: InboxHandler<F>,
    {
        InboxRoute { inbox: self.clone(), handler: Arc::new(handler), _family: PhantomData }
    }

    /// Whether the inbox has recorded event `id` for this consumer.
    pub async fn contains(&self, id: uuid::Uuid) -> Result<bool, OutboxError> {
        let client = self.inner.pool.get().await?;
        let sql = format!("SELECT 1 FROM {} WHERE consumer = $1 AND event_id = $2", self.inner.table);
        Ok(client.query_opt(&sql, &[&self.inner.consumer, &id]).await?.is_some())
    }
}

/// A bus [`Handler`] made by [`Inbox::handler`].
pub struct InboxRoute<F, H> {
    inbox: Inbox,
    handler: Arc<H>,
    _family: PhantomData<fn() -> F>,
}

#[async_trait]
impl<F, H> Handler<F> for InboxRoute<F, H>
where
    F: Send + Sync + 'static,
    H: InboxHandler<F>,
{
    async fn handle(&self, event: Envelope<F>) -> Result<(), HandlerError> {
        let inner = &self.inbox.inner;
        let mut client = inner.pool.get().await.map_err(pg_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let inserted = tx.execute(&inner.insert, &[&inner.consumer, &event.meta.id]).await.map_err(pg_error)?;
        if inserted == 0 {
            // Applied before: nothing to do (the transaction rolls back on drop).
            inner.counter("herald_inbox_duplicates_total").increment(1);
            tracing::debug!(id = %event.meta.id, "inbox: already handled, skipped");
            return Ok(());
        }
        self.handler.handle(&tx, &event).await?;
        tx.commit().await.map_err(pg_error)?;
        inner.counter("herald_inbox_applied_total").increment(1);
        Ok(())
    }
}
