//! SQLite: one file, WAL mode, embedded (the default store).
//!
//! Write transactions start with `BEGIN IMMEDIATE`, so several projector processes on one
//! file queue for the write lock (up to `busy_timeout`) instead of failing when a read
//! transaction upgrades. `synchronous=NORMAL` in WAL mode survives a process crash with
//! every committed transaction; a power loss can lose the last ones, view and position
//! together (they are one transaction), never one without the other.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{ErrorCode, TransactionBehavior};

use super::{Column, Connection, OwnedValue, Row, StoreError, Transaction, Tx, Value};

/// A SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: String,
    busy_timeout: Duration,
}

impl SqliteStore {
    /// The database at `path` (created when missing).
    pub fn new(path: impl Into<String>) -> Self {
        SqliteStore { path: path.into(), busy_timeout: Duration::from_secs(30) }
    }

    /// How long a transaction waits for another process's write lock (default 30 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl super::Store for SqliteStore {
    fn connect(&self) -> Result<Box<dyn Connection>, StoreError> {
        let conn = rusqlite::Connection::open(&self.path).map_err(|e| StoreError::Connect(format!("{}: {e}", self.path)))?;
        conn.busy_timeout(self.busy_timeout).map_err(statement_error)?;
        wal(&conn, self.busy_timeout)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(statement_error)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Box::new(SqliteConnection { conn }))
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

struct SqliteConnection {
    conn: rusqlite::Connection,
}

impl Connection for SqliteConnection {
    fn begin(&mut self, version: u32) -> Result<Box<dyn Transaction + '_>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(statement_error)?;
        Ok(Box::new(SqliteTx { tx, version }))
    }

    fn read(&mut self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(statement_error)?;
        Ok(Box::new(SqliteTx { tx, version: 0 }))
    }
}

struct SqliteTx<'c> {
    tx: rusqlite::Transaction<'c>,
    version: u32,
}

impl SqliteTx<'_> {
    fn prepare(&self, sql: &str, params: &[Value<'_>]) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        let mut stmt = self.tx.prepare_cached(sql).map_err(statement_error)?;
        // `$n` is a named parameter to SQLite: bind by name, so the order in which they
        // appear in the text does not matter.
        let mut name = String::with_capacity(4);
        for (i, value) in params.iter().enumerate() {
            name.clear();
            name.push('$');
            name.push_str(&(i + 1).to_string());
            let index = stmt
                .parameter_index(&name)
                .map_err(statement_error)?
                .ok_or_else(|| StoreError::Statement { message: format!("no parameter {name} in: {sql}"), transient: false })?;
            stmt.raw_bind_parameter(index, value).map_err(statement_error)?;
        }
        Ok(stmt)
    }
}

impl SqliteTx<'_> {
    /// The one-row form of a `{rows}` statement, prepared (cached), and the parameter
    /// index of each column.
    fn prepare_rows(&self, sql: &str, columns: &[Column<'_>]) -> Result<(rusqlite::CachedStatement<'_>, Vec<usize>), StoreError> {
        let one = super::rows::one_row_sql(sql, columns.len());
        let stmt = self.tx.prepare_cached(&one).map_err(statement_error)?;
        let indexes = (1..=columns.len())
            .map(|i| {
                stmt.parameter_index(&format!("${i}"))
                    .map_err(statement_error)?
                    .ok_or_else(|| StoreError::Statement { message: format!("no parameter ${i} in: {one}"), transient: false })
            })
            .collect::<Result<_, _>>()?;
        Ok((stmt, indexes))
    }
}

/// The first `n` values of `row`.
fn read_row(row: &rusqlite::Row<'_>, n: usize) -> Result<Vec<OwnedValue>, StoreError> {
    (0..n)
        .map(|i| {
            Ok(match row.get_ref(i).map_err(statement_error)? {
                ValueRef::Null => OwnedValue::Null,
                ValueRef::Integer(v) => OwnedValue::Int(v),
                ValueRef::Real(v) => OwnedValue::Float(v),
                ValueRef::Text(v) => OwnedValue::Text(String::from_utf8_lossy(v).into_owned()),
                ValueRef::Blob(v) => OwnedValue::Bytes(v.to_vec()),
            })
        })
        .collect()
}

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.prepare(sql, params)?;
        let changed = stmt.raw_execute().map_err(statement_error)?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.prepare(sql, params)?;
        let columns: Arc<[String]> = stmt.column_names().into_iter().map(str::to_owned).collect();
        let n = columns.len();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(statement_error)? {
            out.push(Row { columns: columns.clone(), values: read_row(row, n)? });
        }
        Ok(out)
    }

    fn execute_each_row(&mut self, sql: &str, columns: &[Column<'_>]) -> Result<Vec<u64>, StoreError> {
        let n = super::rows::count(sql, columns)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let (mut stmt, indexes) = self.prepare_rows(sql, columns)?;
        let mut changed = Vec::with_capacity(n);
        for i in 0..n {
            for (c, index) in columns.iter().zip(&indexes) {
                stmt.raw_bind_parameter(*index, c.value(i)).map_err(statement_error)?;
            }
            changed.push(stmt.raw_execute().map_err(statement_error)? as u64);
        }
        Ok(changed)
    }

    fn query_rows(&mut self, sql: &str, columns: &[Column<'_>]) -> Result<Vec<Row>, StoreError> {
        let n = super::rows::count(sql, columns)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let (mut stmt, indexes) = self.prepare_rows(sql, columns)?;
        let names: Arc<[String]> = stmt.column_names().into_iter().map(str::to_owned).collect();
        let mut out = Vec::new();
        for i in 0..n {
            for (c, index) in columns.iter().zip(&indexes) {
                stmt.raw_bind_parameter(*index, c.value(i)).map_err(statement_error)?;
            }
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().map_err(statement_error)? {
                out.push(Row { columns: names.clone(), values: read_row(row, names.len())? });
            }
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.execute_batch(sql).map_err(statement_error)
    }

    fn table(&self, name: &str) -> String {
        super::versioned(name, self.version)
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

impl Transaction for SqliteTx<'_> {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit().map_err(statement_error)
    }

    fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.rollback().map_err(statement_error)
    }

    fn as_tx(&mut self) -> &mut dyn Tx {
        self
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v)),
            Value::Float(v) => ToSqlOutput::Borrowed(ValueRef::Real(v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

/// Puts the file in WAL mode (kept by the file, so done once). The switch needs the file
/// to itself and SQLite answers BUSY at once instead of waiting through the busy handler,
/// so connections opened together to a new file (two processes, or a build's threads)
/// retry it for up to `patience`.
fn wal(conn: &rusqlite::Connection, patience: Duration) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let mode = conn.pragma_query_value(None, "journal_mode", |row| row.get::<_, String>(0)).and_then(|mode| {
            if mode.eq_ignore_ascii_case("wal") {
                Ok(mode)
            } else {
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            }
        });
        match mode {
            Ok(_) => return Ok(()),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) && std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(statement_error(e)),
        }
    }
}

fn statement_error(e: rusqlite::Error) -> StoreError {
    let transient = e.sqlite_error_code().is_some_and(transient_code);
    StoreError::Statement { message: e.to_string(), transient }
}

/// True for a result code that says the database file or the machine failed, not the
/// statement: another writer holds the lock (BUSY, LOCKED), the disk is full (FULL), the
/// operating system reported an I/O error (IOERR), memory ran out (NOMEM), or the file
/// cannot be written now (READONLY: its permissions or its file system changed; PERM).
/// Trying the same transaction again later may succeed; a constraint violation, a syntax
/// error or a type mismatch never will.
fn transient_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::OutOfMemory | ErrorCode::ReadOnly | ErrorCode::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Store;

    #[test]
    fn resource_failures_are_transient_statement_errors_are_not() {
        for code in [ErrorCode::DatabaseBusy, ErrorCode::DatabaseLocked, ErrorCode::DiskFull, ErrorCode::SystemIoFailure, ErrorCode::OutOfMemory, ErrorCode::ReadOnly, ErrorCode::PermissionDenied] {
            assert!(transient_code(code), "{code:?} must be transient");
        }
        for code in [ErrorCode::ConstraintViolation, ErrorCode::TypeMismatch, ErrorCode::TooBig, ErrorCode::Unknown] {
            assert!(!transient_code(code), "{code:?} must be permanent");
        }
    }

    #[test]
    fn a_full_disk_is_transient_a_bad_statement_is_not() {
        let path = std::env::temp_dir().join(format!("herald-sqlite-full-{}-{}", std::process::id(), rand::random::<u32>()));
        let store = SqliteStore::new(path.to_string_lossy().into_owned());
        let mut conn = store.connect().unwrap();
        let mut tx = conn.begin(1).unwrap();
        tx.batch("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)").unwrap();
        // A statement the projection gets wrong: the same every time.
        let syntax = tx.execute("INSERT INTO kv VALUES ($1", &[Value::Text("a")]).unwrap_err();
        assert!(!syntax.is_transient(), "{syntax}");
        tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[Value::Text("a"), Value::Bytes(b"x")]).unwrap();
        let duplicate = tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[Value::Text("a"), Value::Bytes(b"x")]).unwrap_err();
        assert!(!duplicate.is_transient(), "{duplicate}");
        // The disk fills up (the file may not grow past its current pages): SQLITE_FULL.
        let pages = tx.query_opt("PRAGMA page_count", &[]).unwrap().unwrap().int(0).unwrap();
        tx.query_opt(&format!("PRAGMA max_page_count = {pages}"), &[]).unwrap();
        let full = tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[Value::Text("b"), Value::Bytes(&[0; 1 << 16])]).unwrap_err();
        assert!(full.is_transient(), "{full}");
        assert!(full.to_string().contains("full"), "{full}");
        // SQLite may have rolled the transaction back by itself already (it does on FULL).
        let _ = tx.rollback();
        drop(conn);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn statements_bind_dollar_parameters_by_number_and_roll_back() {
        let dir = std::env::temp_dir().join(format!("herald-sqlite-{}-{}", std::process::id(), rand::random::<u32>()));
        let store = SqliteStore::new(dir.to_string_lossy().into_owned());
        let mut conn = store.connect().unwrap();
        let mut tx = conn.begin(1).unwrap();
        let t = tx.table("kv");
        tx.batch(&format!("CREATE TABLE {t} (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")).unwrap();
        // $2 appears before $1: binding is by number, not by position.
        tx.execute(&format!("INSERT INTO {t} (n, k) VALUES ($2, $1)"), &[Value::Text("a"), Value::Int(5)]).unwrap();
        tx.commit().unwrap();
        let mut tx = conn.begin(1).unwrap();
        let row = tx.query_opt(&format!("UPDATE {t} SET n = n + $1 WHERE k = $2 RETURNING n"), &[Value::Int(2), Value::Text("a")]).unwrap();
        assert_eq!(row.unwrap().int(0).unwrap(), 7);
        tx.rollback().unwrap();
        let mut tx = conn.begin(1).unwrap();
        let row = tx.query_opt(&format!("SELECT k, n FROM {t}"), &[]).unwrap().unwrap();
        assert_eq!(row.to_json(), serde_json::json!({"k": "a", "n": 5}));
        drop(tx);
        // Each row's change: which rows an insert that skips conflicts inserted.
        let mut tx = conn.begin(1).unwrap();
        let insert = format!("INSERT INTO {t} (k, n) {{rows}} ON CONFLICT (k) DO NOTHING");
        let changed = tx.execute_each_row(&insert, &[Column::Text(&["b", "a", "c", "b"]), Column::Int(&[1, 2, 3, 4])]).unwrap();
        assert_eq!(changed, [1, 0, 1, 0], "a is stored already, b comes twice");
        assert_eq!(tx.execute_rows(&insert, &[Column::Text(&["c", "d"]), Column::Int(&[5, 6])]).unwrap(), 1);
        tx.rollback().unwrap();
        drop(conn);
        // The database and its WAL files.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", dir.display()));
        }
    }
}
