//! View versions: physical tables per version, served through database views.
//!
//! A projection's logical table `customer_totals` is stored as `customer_totals__v1`,
//! `customer_totals__v2`, ...; queries read the database view `customer_totals`, which
//! selects from the live version. A rebuild fills the next version's tables beside the
//! live ones, then one transaction re-points the views and records the new live version
//! (the previous one is kept for rollback).

use std::sync::Arc;

use herald_bus::EventFamily;

use crate::error::{ProjectionError, ProjectorError};
use crate::position;
use crate::projection::Projection;
use crate::store::{Store, StoreError, Tx};

/// Makes sure the store has the bookkeeping tables and the tables of `version` (default:
/// the live version, or 1 for a new projection, which then becomes live with its views;
/// an explicit version is left for a swap to make live).
/// Returns the version to write.
pub(crate) async fn prepare<F: EventFamily, P: Projection<F>>(store: Arc<dyn Store>, projection: Arc<P>, version: Option<u32>) -> Result<u32, ProjectorError> {
    let task = tokio::task::spawn_blocking(move || -> Result<u32, ProjectorError> {
        let mut conn = store.connect()?;
        let mut tx = conn.begin(1)?;
        position::migrate(tx.as_tx())?;
        let live = position::live_version(tx.as_tx(), P::NAME)?;
        tx.commit()?;
        let follows_live = version.is_none();
        let version = version.or(live.map(|(v, _)| v)).unwrap_or(1);
        let mut tx = conn.begin(version)?;
        lock(tx.as_tx())?;
        projection.migrate(tx.as_tx()).map_err(|source| ProjectorError::Migrate { projection: P::NAME.to_owned(), source })?;
        // A new projection's first version is live from the start; a version being
        // rebuilt becomes live only when it is swapped in.
        if follows_live && position::live_version(tx.as_tx(), P::NAME)?.is_none() {
            point_views(tx.as_tx(), projection.views(), version)?;
            position::set_live_version(tx.as_tx(), P::NAME, version, None)?;
        }
        tx.commit()?;
        Ok(version)
    });
    task.await.map_err(|e| ProjectorError::StoreThread(e.to_string()))?
}

/// Serialises migrations of concurrent processes (PostgreSQL; SQLite's `BEGIN IMMEDIATE`
/// already does). [`position::migrate`] takes it; a projection's own migration takes it
/// here.
pub(crate) fn lock(tx: &mut dyn Tx) -> Result<(), StoreError> {
    if tx.kind() == "postgres" {
        tx.execute("SELECT pg_advisory_xact_lock(4242424242)", &[])?;
    }
    Ok(())
}

/// Points each logical view at the tables of `version`.
pub(crate) fn point_views(tx: &mut dyn Tx, views: &[&str], version: u32) -> Result<(), StoreError> {
    for view in views {
        let table = crate::store::versioned(view, version);
        tx.batch(&format!("DROP VIEW IF EXISTS {view}; CREATE VIEW {view} AS SELECT * FROM {table}"))?;
    }
    Ok(())
}

/// Makes `version` live: re-points the views and records it, keeping the current live
/// version as the previous one. One transaction: readers see the old or the new view,
/// never a mix.
pub fn swap<F: EventFamily, P: Projection<F>>(store: &dyn Store, projection: &P, version: u32) -> Result<Option<u32>, ProjectionError> {
    let mut conn = store.connect()?;
    let mut tx = conn.begin(version)?;
    lock(tx.as_tx())?;
    let previous = position::live_version(tx.as_tx(), P::NAME)?.map(|(v, _)| v);
    point_views(tx.as_tx(), projection.views(), version)?;
    position::set_live_version(tx.as_tx(), P::NAME, version, previous)?;
    tx.commit()?;
    Ok(previous)
}

/// The version a new build of `name` takes, reserved for it: past the live and previous
/// versions, past every version built before and never swapped in (an interrupted
/// rebuild, a time travel), so it starts from nothing, and past every version another
/// build reserved, so that two builds started together never share one (and its tables).
pub fn next_version(store: &dyn Store, name: &str) -> Result<u32, StoreError> {
    let mut conn = store.connect()?;
    loop {
        let mut tx = conn.begin(1)?;
        position::migrate(tx.as_tx())?;
        let (live, previous) = position::live_version(tx.as_tx(), name)?.unwrap_or((0, None));
        let built = position::highest_built_version(tx.as_tx(), name)?.unwrap_or(0);
        let reserved = position::highest_reserved_version(tx.as_tx(), name)?.unwrap_or(0);
        let version = live.max(previous.unwrap_or(0)).max(built).max(reserved) + 1;
        // Two PostgreSQL transactions may read the same highest version: the first to
        // commit gets it, the other inserts nothing and reads again.
        if position::reserve_version(tx.as_tx(), name, version)? {
            tx.commit()?;
            return Ok(version);
        }
        tx.rollback()?;
    }
}

/// The live and previous versions of `P`.
pub fn versions(store: &dyn Store, name: &str) -> Result<Option<(u32, Option<u32>)>, StoreError> {
    let mut conn = store.connect()?;
    let mut tx = conn.begin(1)?;
    position::migrate(tx.as_tx())?;
    let v = position::live_version(tx.as_tx(), name)?;
    tx.rollback()?;
    Ok(v)
}
