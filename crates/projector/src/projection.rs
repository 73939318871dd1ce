//! The [`Projection`] trait: typed handlers that fold events into a view.

use herald_bus::{Envelope, EventFamily};

use crate::error::{BatchError, ProjectionError};
use crate::store::Tx;

/// A read model built from the events of one family.
///
/// `apply` runs inside the store transaction that also moves the projection's position,
/// so an event's effect and the fact that it was applied commit together. Write tables
/// through [`Tx::table`] (`tx.table("customer_totals")`), which names the physical table
/// of the view version being built, so the view can be rebuilt beside the live one.
///
/// Match the family enum exhaustively: a new event type then makes the compiler list every
/// projection that must decide about it.
///
/// ```
/// use herald_bus::Envelope;
/// use herald_projector::{Projection, ProjectionError, Tx, Value};
/// # herald_bus::family! { #[derive(Debug)] pub enum Demo { Pinged(Pinged) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Pinged { id: String }
/// # impl herald_bus::Event for Pinged { const TYPE: &'static str = "demo.Pinged"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
///
/// struct PingCounts;
///
/// impl Projection<Demo> for PingCounts {
///     const NAME: &'static str = "ping_counts";
///
///     fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError> {
///         let t = tx.table("pings");
///         tx.batch(&format!("CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, n BIGINT NOT NULL)"))?;
///         Ok(())
///     }
///
///     fn apply(&self, tx: &mut dyn Tx, event: &Envelope<Demo>) -> Result<(), ProjectionError> {
///         match &event.event {
///             Demo::Pinged(p) => {
///                 let t = tx.table("pings");
///                 let sql = format!("INSERT INTO {t} (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = {t}.n + 1");
///                 tx.execute(&sql, &[Value::Text(&p.id)])?;
///             }
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Projection<F: EventFamily>: Send + Sync + 'static {
    /// The projection's stable name: its positions and views are stored under it.
    const NAME: &'static str;

    /// The logical tables of the view (for example `["customer_totals"]`): each is served
    /// through a database view of that name over the live version's table, and swapped
    /// atomically after a rebuild. Auxiliary tables the queries never read need not be
    /// listed.
    fn views(&self) -> &'static [&'static str] {
        &[]
    }

    /// Creates the view's tables (through [`Tx::table`]) if missing. Runs in a transaction
    /// before the first event, for each view version.
    fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError>;

    /// Applies one event to the view. Runs inside the batch's transaction: return an error
    /// to roll it back ([`ProjectionError::Transient`] is retried, a permanent error makes
    /// the event a poison event). Must be deterministic: after a crash or a rebalance the
    /// same event is applied again to the view as it was before it.
    fn apply(&self, tx: &mut dyn Tx, event: &Envelope<F>) -> Result<(), ProjectionError>;

    /// Applies the events of one transaction: each partition's events in offset order
    /// (the transaction may hold several partitions' batches, one after the other, so
    /// only the order within a partition is meaningful, as for `apply`).
    /// The default applies them one by one with [`apply`](Projection::apply); override it
    /// to write a whole batch in a few statements: fold the events in memory (several
    /// events of one key become one row), read what the fold needs in one query
    /// ([`Tx::query_rows`]) and write the rows in one statement per table
    /// ([`Tx::execute_rows`]). The effect must equal applying each event in order.
    ///
    /// An error that names the failing event ([`BatchError::at`]) counts as that event's
    /// failure. One that does not (any `?` on a [`ProjectionError`] or store error) makes
    /// the projector roll the transaction back and apply the same events again one by one
    /// with `apply`, so the error that counts, and the event it names, is `apply`'s.
    fn apply_batch(&self, tx: &mut dyn Tx, events: &[&Envelope<F>]) -> Result<(), BatchError> {
        events.iter().enumerate().try_for_each(|(i, event)| self.apply(tx, event).map_err(|e| BatchError::at(i, e)))
    }
}
