//! Positions: where each projection version stands in each partition, stored in the same
//! database (and the same transaction) as the view.
//!
//! `herald_positions(projection, version, topic, partition_id, next_offset, updated_at)`
//! holds the offset of the next record to apply. It is only ever changed by
//! [`advance`], a compare-and-set: the row moves from the offset a batch started at to the
//! offset after it, or the transaction is refused. A member that lost a partition (and
//! was replaced by another that already moved the position) therefore cannot commit a
//! stale batch: its compare-and-set finds another offset and it rolls back.
//!
//! `herald_dead_letters` records, in the same transaction that moves past it, every record
//! the projection gave up on, with its reason; `herald_views` names the live version of
//! each view and the previous one (kept for rollback); `herald_builds` the versions that
//! builds reserved ([`reserve_version`]), so that two never build the same one.

use std::collections::HashMap;

use crate::store::{StoreError, Tx, Value};

/// The bookkeeping tables, created by [`migrate`].
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS herald_positions (
    projection TEXT NOT NULL,
    version BIGINT NOT NULL,
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (projection, version, topic, partition_id)
);
CREATE TABLE IF NOT EXISTS herald_dead_letters (
    projection TEXT NOT NULL,
    version BIGINT NOT NULL,
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    record_offset BIGINT NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (projection, version, topic, partition_id, record_offset)
);
CREATE TABLE IF NOT EXISTS herald_views (
    projection TEXT PRIMARY KEY,
    live_version BIGINT NOT NULL,
    previous_version BIGINT,
    swapped_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS herald_builds (
    projection TEXT NOT NULL,
    version BIGINT NOT NULL,
    reserved_at TEXT NOT NULL,
    PRIMARY KEY (projection, version)
);
";

/// Creates the bookkeeping tables if missing. Holds the store's migration lock until the
/// transaction ends: PostgreSQL's `CREATE TABLE IF NOT EXISTS` run by two transactions at
/// once fails one of them (a duplicate key in its catalog).
pub fn migrate(tx: &mut dyn Tx) -> Result<(), StoreError> {
    crate::views::lock(tx)?;
    tx.batch(SCHEMA)
}

/// Which projection version a position belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The projection's name.
    pub projection: String,
    /// The view version.
    pub version: u32,
    /// The topic.
    pub topic: String,
}

/// The stored next offsets of `key`, by partition. A partition without a row has applied
/// nothing yet and starts from the beginning of the log.
pub fn load(tx: &mut dyn Tx, key: &Key) -> Result<HashMap<i32, i64>, StoreError> {
    let rows = tx.query(
        "SELECT partition_id, next_offset FROM herald_positions WHERE projection = $1 AND version = $2 AND topic = $3",
        &[Value::Text(&key.projection), Value::Int(key.version.into()), Value::Text(&key.topic)],
    )?;
    rows.iter()
        .map(|r| Ok((i32::try_from(r.int(0)?).map_err(|e| StoreError::Type(e.to_string()))?, r.int(1)?)))
        .collect()
}

/// Moves the position of `partition` from `from` (`None`: no row yet) to `to`. Returns
/// false, changing nothing, when the stored position is not `from`: another member moved
/// it, so this transaction must roll back.
pub fn advance(tx: &mut dyn Tx, key: &Key, partition: i32, from: Option<i64>, to: i64) -> Result<bool, StoreError> {
    let now = chrono::Utc::now().to_rfc3339();
    let params = [
        Value::Text(&key.projection),
        Value::Int(key.version.into()),
        Value::Text(&key.topic),
        Value::Int(partition.into()),
        Value::Int(to),
        Value::Text(&now),
    ];
    let changed = match from {
        Some(from) => {
            let mut with_from = params.to_vec();
            with_from.push(Value::Int(from));
            tx.execute(
                "UPDATE herald_positions SET next_offset = $5, updated_at = $6 \
                 WHERE projection = $1 AND version = $2 AND topic = $3 AND partition_id = $4 AND next_offset = $7",
                &with_from,
            )?
        }
        None => tx.execute(
            "INSERT INTO herald_positions (projection, version, topic, partition_id, next_offset, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (projection, version, topic, partition_id) DO NOTHING",
            &params,
        )?,
    };
    Ok(changed == 1)
}

/// Records that the record at `offset` was given up on (dead-lettered), in the
/// transaction that moves the position past it.
pub fn record_dead_letter(tx: &mut dyn Tx, key: &Key, partition: i32, offset: i64, stage: &str, reason: &str) -> Result<(), StoreError> {
    let now = chrono::Utc::now().to_rfc3339();
    tx.execute(
        "INSERT INTO herald_dead_letters (projection, version, topic, partition_id, record_offset, stage, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (projection, version, topic, partition_id, record_offset) DO UPDATE SET reason = excluded.reason, at = excluded.at",
        &[
            Value::Text(&key.projection),
            Value::Int(key.version.into()),
            Value::Text(&key.topic),
            Value::Int(partition.into()),
            Value::Int(offset),
            Value::Text(stage),
            Value::Text(reason),
            Value::Text(&now),
        ],
    )?;
    Ok(())
}

/// A dead letter as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterRow {
    /// Partition.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// `decode`, `unknown-type` or `handler`.
    pub stage: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The dead letters recorded for `key`, by partition and offset.
pub fn dead_letters(tx: &mut dyn Tx, key: &Key) -> Result<Vec<DeadLetterRow>, StoreError> {
    let rows = tx.query(
        "SELECT partition_id, record_offset, stage, reason, at FROM herald_dead_letters \
         WHERE projection = $1 AND version = $2 AND topic = $3 ORDER BY partition_id, record_offset",
        &[Value::Text(&key.projection), Value::Int(key.version.into()), Value::Text(&key.topic)],
    )?;
    rows.iter()
        .map(|r| {
            Ok(DeadLetterRow {
                partition: i32::try_from(r.int(0)?).map_err(|e| StoreError::Type(e.to_string()))?,
                offset: r.int(1)?,
                stage: r.text(2)?.to_owned(),
                reason: r.text(3)?.to_owned(),
                at: r.text(4)?.to_owned(),
            })
        })
        .collect()
}

/// The highest version of `projection` that holds positions or dead letters (built, live
/// or not), if any: a new build must not take one of these, or it would start from that
/// version's positions and rows.
pub fn highest_built_version(tx: &mut dyn Tx, projection: &str) -> Result<Option<u32>, StoreError> {
    max_version(
        tx,
        "SELECT MAX(version) FROM (SELECT version FROM herald_positions WHERE projection = $1 \
         UNION ALL SELECT version FROM herald_dead_letters WHERE projection = $1) built",
        projection,
    )
}

/// Reserves `version` of `projection` for a build. Returns false, changing nothing, when
/// another build reserved it first.
pub fn reserve_version(tx: &mut dyn Tx, projection: &str, version: u32) -> Result<bool, StoreError> {
    let now = chrono::Utc::now().to_rfc3339();
    let inserted = tx.execute(
        "INSERT INTO herald_builds (projection, version, reserved_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[Value::Text(projection), Value::Int(version.into()), Value::Text(&now)],
    )?;
    Ok(inserted == 1)
}

/// The highest version of `projection` a build reserved, if any.
pub fn highest_reserved_version(tx: &mut dyn Tx, projection: &str) -> Result<Option<u32>, StoreError> {
    max_version(tx, "SELECT MAX(version) FROM herald_builds WHERE projection = $1", projection)
}

/// The version `sql` (a `MAX(version)` of `projection`, bound as `$1`) answers; `None`
/// when it answers NULL (no row).
fn max_version(tx: &mut dyn Tx, sql: &str, projection: &str) -> Result<Option<u32>, StoreError> {
    let row = tx.query_opt(sql, &[Value::Text(projection)])?;
    match row.and_then(|r| r.values.into_iter().next()) {
        Some(crate::store::OwnedValue::Int(v)) => u32::try_from(v).map(Some).map_err(|e| StoreError::Type(e.to_string())),
        _ => Ok(None),
    }
}

/// The live and previous versions of `projection`'s views, if it has any.
pub fn live_version(tx: &mut dyn Tx, projection: &str) -> Result<Option<(u32, Option<u32>)>, StoreError> {
    let row = tx.query_opt("SELECT live_version, previous_version FROM herald_views WHERE projection = $1", &[Value::Text(projection)])?;
    let to_u32 = |v: i64| u32::try_from(v).map_err(|e| StoreError::Type(e.to_string()));
    match row {
        None => Ok(None),
        Some(r) => {
            let previous = match r.values.get(1) {
                Some(crate::store::OwnedValue::Int(v)) => Some(to_u32(*v)?),
                _ => None,
            };
            Ok(Some((to_u32(r.int(0)?)?, previous)))
        }
    }
}

/// Makes `version` the live version of `projection` (the current one becomes previous).
pub fn set_live_version(tx: &mut dyn Tx, projection: &str, version: u32, previous: Option<u32>) -> Result<(), StoreError> {
    let now = chrono::Utc::now().to_rfc3339();
    tx.execute(
        "INSERT INTO herald_views (projection, live_version, previous_version, swapped_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (projection) DO UPDATE SET live_version = excluded.live_version, \
         previous_version = excluded.previous_version, swapped_at = excluded.swapped_at",
        &[Value::Text(projection), Value::Int(version.into()), previous.map(i64::from).into(), Value::Text(&now)],
    )?;
    Ok(())
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Store;

    #[test]
    fn advance_is_a_compare_and_set() {
        let path = std::env::temp_dir().join(format!("herald-pos-{}-{}", std::process::id(), rand::random::<u32>()));
        let store = crate::store::sqlite::SqliteStore::new(path.to_string_lossy().into_owned());
        let mut conn = store.connect().unwrap();
        let key = Key { projection: "p".into(), version: 1, topic: "t".into() };
        let mut tx = conn.begin(1).unwrap();
        migrate(tx.as_tx()).unwrap();
        assert!(advance(tx.as_tx(), &key, 0, None, 10).unwrap(), "first insert");
        assert!(!advance(tx.as_tx(), &key, 0, None, 12).unwrap(), "a second first-insert is refused");
        assert!(!advance(tx.as_tx(), &key, 0, Some(9), 12).unwrap(), "stale start is refused");
        assert!(advance(tx.as_tx(), &key, 0, Some(10), 12).unwrap());
        tx.commit().unwrap();
        let mut tx = conn.begin(1).unwrap();
        assert_eq!(load(tx.as_tx(), &key).unwrap(), HashMap::from([(0, 12)]));
        drop(tx);
        drop(conn);
        // The database and its WAL files.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
