//! The store abstraction: where views and positions live.
//!
//! A [`Store`] opens [`Connection`]s; a connection begins [`Transaction`]s; projections
//! see a transaction as a [`Tx`]: run a statement, read rows, and map a logical table
//! name to the physical table of the view version being built ([`Tx::table`]).
//!
//! SQL is written once for every backend: parameters are `$1`, `$2`, ... (PostgreSQL's
//! syntax, which SQLite also accepts), integers are `BIGINT`, text is `TEXT`, upserts use
//! `INSERT ... ON CONFLICT (...) DO UPDATE`, and `RETURNING` reads what a statement changed.
//!
//! Connections are synchronous and are used from the projector's own store thread, never
//! from the async poll loop.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
mod postgres_tls;
mod rows;
mod url;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;

/// A value bound to a `$n` parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL `NULL`.
    Null,
    /// A 64-bit integer (`BIGINT`; also binds to `INTEGER` columns in PostgreSQL).
    Int(i64),
    /// A double (`DOUBLE PRECISION` / `REAL`).
    Float(f64),
    /// Text.
    Text(&'a str),
    /// Bytes (`BYTEA` / `BLOB`).
    Bytes(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum OwnedValue {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// One row of a query result: its column names and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Column names, in select order.
    pub columns: Arc<[String]>,
    /// Values, in select order.
    pub values: Vec<OwnedValue>,
}

impl Row {
    /// The integer in column `i`.
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.values.get(i) {
            Some(OwnedValue::Int(v)) => Ok(*v),
            other => Err(StoreError::Type(format!("column {i}: expected an integer, found {other:?}"))),
        }
    }

    /// The text in column `i`.
    pub fn text(&self, i: usize) -> Result<&str, StoreError> {
        match self.values.get(i) {
            Some(OwnedValue::Text(v)) => Ok(v),
            other => Err(StoreError::Type(format!("column {i}: expected text, found {other:?}"))),
        }
    }

    /// The row as a JSON object, column name to value.
    pub fn to_json(&self) -> serde_json::Value {
        let map = self
            .columns
            .iter()
            .zip(&self.values)
            .map(|(c, v)| (c.clone(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null)))
            .collect();
        serde_json::Value::Object(map)
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL is not one this build understands.
    #[error("unsupported store {0:?} (expected sqlite:PATH or postgres://...; is the cargo feature enabled?)")]
    Unsupported(String),
    /// Connecting failed.
    #[error("cannot connect to the store: {0}")]
    Connect(String),
    /// A statement failed.
    #[error("statement failed: {message}")]
    Statement {
        /// The database's message.
        message: String,
        /// True when the database or the session failed, not the statement, so that
        /// trying again later may succeed: a lost connection, lock timeouts, deadlocks,
        /// serialization failures, a statement timeout, a full disk, an I/O error, a
        /// server turned read-only by a failover.
        transient: bool,
    },
    /// A value had another type than expected.
    #[error("unexpected value: {0}")]
    Type(String),
}

impl StoreError {
    /// True when the same transaction may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Statement { transient, .. } => *transient,
            StoreError::Connect(_) => true,
            _ => false,
        }
    }
}

/// What a projection sees of a transaction.
pub trait Tx {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError>;

    /// Runs a query (or a statement with `RETURNING`) and returns its rows.
    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError>;

    /// Runs a query expected to return at most one row.
    fn query_opt(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs a statement over many rows at once and returns the number of rows it changed:
    /// `sql` holds the marker `{rows}` where a row source goes (`INSERT INTO t (k, n)
    /// {rows} ON CONFLICT (k) DO UPDATE SET ...`), and row `i` is the `i`-th value of each
    /// column (all of the same length). PostgreSQL runs it once, over arrays (`SELECT *
    /// FROM UNNEST($1::text[], ...)`); SQLite runs it once per row (`VALUES ($1, ...)`),
    /// prepared once. A batched [`Projection::apply_batch`](crate::Projection::apply_batch)
    /// writes its folded rows with it.
    ///
    /// Because PostgreSQL sees all the rows in one statement, an `ON CONFLICT ... DO UPDATE`
    /// must not meet the same key twice: fold the rows by key first.
    fn execute_rows(&mut self, sql: &str, columns: &[Column<'_>]) -> Result<u64, StoreError> {
        Ok(self.execute_each_row(sql, columns)?.iter().sum())
    }

    /// Runs a statement once per row (`sql` and `columns` as for [`Tx::execute_rows`])
    /// and returns the number of rows each run changed, in row order: which rows an
    /// `INSERT ... ON CONFLICT DO NOTHING` inserted, say. On SQLite that is what
    /// [`Tx::execute_rows`] does anyway, and the counts come free, where a `RETURNING`
    /// clause makes SQLite build a temporary table at every run. On PostgreSQL it costs a
    /// round trip per row: there, `RETURNING` through [`Tx::query_rows`] answers the same
    /// in one statement (branch on [`Tx::kind`]).
    fn execute_each_row(&mut self, sql: &str, columns: &[Column<'_>]) -> Result<Vec<u64>, StoreError> {
        rows::changes_each(self, sql, columns)
    }

    /// Runs a query over many rows at once (`SELECT ... WHERE k IN ({rows})`, see
    /// [`Tx::execute_rows`]) and returns its rows, in no particular order.
    fn query_rows(&mut self, sql: &str, columns: &[Column<'_>]) -> Result<Vec<Row>, StoreError> {
        rows::query_each(self, sql, columns)
    }

    /// Runs statements without parameters, separated by `;` (for migrations).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;

    /// The physical name of logical table `name` in the view version this transaction
    /// writes: `name__v<version>`. Projections write through it, so a rebuild can build a
    /// new version beside the one being served.
    fn table(&self, name: &str) -> String;

    /// The backend: `sqlite` or `postgres`, for the rare statement that differs.
    fn kind(&self) -> &'static str;
}

/// A transaction that can be committed or rolled back.
pub trait Transaction: Tx {
    /// Commits.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Rolls back (also what dropping does).
    fn rollback(self: Box<Self>) -> Result<(), StoreError>;
    /// The transaction as a [`Tx`].
    fn as_tx(&mut self) -> &mut dyn Tx;
}

/// One connection to a store, used from one thread at a time.
pub trait Connection: Send {
    /// Begins a write transaction whose [`Tx::table`] maps to view version `version`.
    fn begin(&mut self, version: u32) -> Result<Box<dyn Transaction + '_>, StoreError>;

    /// Begins a read-only transaction (a consistent snapshot for queries; it never takes
    /// the write lock).
    fn read(&mut self) -> Result<Box<dyn Transaction + '_>, StoreError>;
}

/// A store: opens connections.
pub trait Store: Send + Sync + 'static {
    /// Opens a connection.
    fn connect(&self) -> Result<Box<dyn Connection>, StoreError>;
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
}

/// Opens the store named by `url`: `sqlite:PATH` (or a path ending in `.db`/`.sqlite`) or
/// `postgres://...`, as far as the crate's features allow. Errors show the URL with its
/// password redacted ([`StoreUrl`]).
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    #[cfg(feature = "sqlite")]
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(Arc::new(sqlite::SqliteStore::new(path.trim_start_matches("//"))));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresStore::new(url)?));
    }
    Err(StoreError::Unsupported(redact(url)))
}

/// The physical table name of `name` in view version `version`.
pub fn versioned(name: &str, version: u32) -> String {
    format!("{name}__v{version}")
}

pub use rows::{Column, ROWS};
pub use url::{redact, StoreUrl};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_json() {
        let row = Row { columns: vec!["k".to_owned(), "n".to_owned()].into(), values: vec![OwnedValue::Text("a".into()), OwnedValue::Int(3)] };
        assert_eq!(row.to_json(), serde_json::json!({"k": "a", "n": 3}));
        assert_eq!(row.int(1).ok(), Some(3));
        assert!(row.int(0).is_err());
        assert_eq!(versioned("t", 2), "t__v2");
    }

    #[test]
    fn unknown_urls_are_refused() {
        assert!(matches!(open("mysql://x"), Err(StoreError::Unsupported(_))));
    }
}
