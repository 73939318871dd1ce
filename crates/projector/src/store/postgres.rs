//! PostgreSQL through the synchronous `postgres` client, on the projector's store thread.
//!
//! Transactions run at `READ COMMITTED`: the position update is a compare-and-set on one
//! row, so a second writer for the same partition waits for the first and then finds the
//! position moved (it rolls back). Statements are prepared once per connection.
//!
//! TLS: libpq's `sslmode=disable|prefer|require|verify-ca|verify-full` and
//! `sslrootcert=PATH` URL parameters, through rustls (see `postgres_tls.rs`), for example
//! `postgres://herald@db:5432/views?sslmode=verify-full&sslrootcert=/etc/herald/ca.pem`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{NoTls, Statement};

use super::{Column, Connection, OwnedValue, Row, StoreError, Transaction, Tx, Value};

/// A PostgreSQL database, by URL (`postgres://user@host:port/db`, TLS with
/// `?sslmode=verify-full&sslrootcert=PATH`; see the [module docs](self)).
#[derive(Clone)]
pub struct PostgresStore {
    config: postgres::Config,
    /// The TLS connector, `None` for plain TCP.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The URL, to scrub its password from the driver's messages.
    url: super::StoreUrl,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config's Debug redacts the password.
        f.debug_struct("PostgresStore").field("config", &self.config).field("tls", &self.tls.is_some()).finish()
    }
}

impl PostgresStore {
    /// The database at `url`.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let url = super::StoreUrl::new(url);
        let invalid = |e: &dyn std::fmt::Display| StoreError::Connect(format!("invalid PostgreSQL URL {url}: {}", url.scrub(&e.to_string())));
        let (plain, tls) = super::postgres_tls::split(url.expose()).map_err(|e| invalid(&e))?;
        let config = plain.parse::<postgres::Config>().map_err(|e| invalid(&e))?;
        let tls = super::postgres_tls::connector(&tls).map_err(|e| invalid(&e))?;
        Ok(PostgresStore { config, tls, url })
    }
}

impl super::Store for PostgresStore {
    fn connect(&self) -> Result<Box<dyn Connection>, StoreError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        // With its causes: "error performing TLS handshake: invalid peer certificate: ...".
        let client = connected.map_err(|e| StoreError::Connect(format!("{}: {}", self.url, self.url.scrub(&with_sources(&e)))))?;
        Ok(Box::new(PgConnection { client: Some(client), statements: HashMap::new() }))
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

/// Prepared statements kept per connection (the whole cache is dropped when it is full).
const STATEMENT_CACHE: usize = 256;

struct PgConnection {
    /// Always `Some` until dropped.
    client: Option<postgres::Client>,
    statements: HashMap<String, Statement>,
}

impl PgConnection {
    fn parts(&mut self) -> Result<(&mut postgres::Client, &mut HashMap<String, Statement>), StoreError> {
        let PgConnection { client, statements } = self;
        let client = client.as_mut().ok_or_else(|| StoreError::Connect("connection closed".into()))?;
        Ok((client, statements))
    }
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        // The synchronous client closes by blocking on its own runtime, which panics on a
        // thread that drives an async runtime: close it on a thread of its own there.
        self.statements.clear();
        if let Some(client) = self.client.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new().name("herald-pg-close".into()).spawn(move || drop(client));
        }
    }
}

impl Connection for PgConnection {
    fn begin(&mut self, version: u32) -> Result<Box<dyn Transaction + '_>, StoreError> {
        let (client, statements) = self.parts()?;
        let tx = client.transaction().map_err(statement_error)?;
        Ok(Box::new(PgTx { tx, statements, version }))
    }

    fn read(&mut self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        let (client, statements) = self.parts()?;
        let tx = client.build_transaction().read_only(true).start().map_err(statement_error)?;
        Ok(Box::new(PgTx { tx, statements, version: 0 }))
    }
}

struct PgTx<'c> {
    tx: postgres::Transaction<'c>,
    statements: &'c mut HashMap<String, Statement>,
    version: u32,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).map_err(statement_error)?;
        // Bounded like SQLite's cache: a projection that writes literals into its SQL
        // would otherwise prepare a server-side statement per text, forever.
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

fn refs<'v>(params: &'v [Value<'_>]) -> Vec<&'v (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Tx for PgTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        self.tx.execute(&stmt, &refs(params)).map_err(statement_error)
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql)?;
        let rows = self.tx.query(&stmt, &refs(params)).map_err(statement_error)?;
        read_rows(&stmt, &rows)
    }

    fn execute_rows(&mut self, sql: &str, columns: &[Column<'_>]) -> Result<u64, StoreError> {
        if super::rows::count(sql, columns)? == 0 {
            return Ok(0);
        }
        let stmt = self.statement(&unnest_sql(sql, columns))?;
        self.tx.execute(&stmt, &arrays(columns)).map_err(statement_error)
    }

    fn query_rows(&mut self, sql: &str, columns: &[Column<'_>]) -> Result<Vec<Row>, StoreError> {
        if super::rows::count(sql, columns)? == 0 {
            return Ok(Vec::new());
        }
        let stmt = self.statement(&unnest_sql(sql, columns))?;
        let rows = self.tx.query(&stmt, &arrays(columns)).map_err(statement_error)?;
        read_rows(&stmt, &rows)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.batch_execute(sql).map_err(statement_error)
    }

    fn table(&self, name: &str) -> String {
        super::versioned(name, self.version)
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

impl Transaction for PgTx<'_> {
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

/// `sql` with `{rows}` as `SELECT * FROM UNNEST($1::text[], ...)`: one statement for
/// every row, each parameter an array (the rows travel in one message, the server
/// unpacks them in one pass).
fn unnest_sql(sql: &str, columns: &[Column<'_>]) -> String {
    let arrays = columns.iter().enumerate().map(|(i, c)| format!("${}::{}", i + 1, c.pg_array())).collect::<Vec<_>>().join(", ");
    sql.replace(super::ROWS, &format!("SELECT * FROM UNNEST({arrays})"))
}

/// The columns as array parameters.
fn arrays<'v>(columns: &'v [Column<'_>]) -> Vec<&'v (dyn ToSql + Sync)> {
    columns
        .iter()
        .map(|c| -> &(dyn ToSql + Sync) {
            match c {
                Column::Int(v) => v,
                Column::OptInt(v) => v,
                Column::Float(v) => v,
                Column::Text(v) => v,
                Column::OptText(v) => v,
            }
        })
        .collect()
}

fn read_rows(stmt: &Statement, rows: &[postgres::Row]) -> Result<Vec<Row>, StoreError> {
    let columns: Arc<[String]> = stmt.columns().iter().map(|c| c.name().to_owned()).collect();
    rows.iter()
        .map(|row| {
            let values = stmt.columns().iter().enumerate().map(|(i, c)| read(row, i, c.type_())).collect::<Result<_, _>>()?;
            Ok(Row { columns: columns.clone(), values })
        })
        .collect()
}

fn read(row: &postgres::Row, i: usize, ty: &Type) -> Result<OwnedValue, StoreError> {
    let e = |e: postgres::Error| StoreError::Type(e.to_string());
    Ok(match *ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(e)?.map_or(OwnedValue::Null, OwnedValue::Int),
        Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(e)?.map_or(OwnedValue::Null, |v| OwnedValue::Int(v.into())),
        Type::INT2 => row.try_get::<_, Option<i16>>(i).map_err(e)?.map_or(OwnedValue::Null, |v| OwnedValue::Int(v.into())),
        Type::BOOL => row.try_get::<_, Option<bool>>(i).map_err(e)?.map_or(OwnedValue::Null, |v| OwnedValue::Int(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map_err(e)?.map_or(OwnedValue::Null, OwnedValue::Float),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(i).map_err(e)?.map_or(OwnedValue::Null, |v| OwnedValue::Float(v.into())),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i).map_err(e)?.map_or(OwnedValue::Null, OwnedValue::Bytes),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(i).map_err(e)?.map_or(OwnedValue::Null, OwnedValue::Text)
        }
        Type::VOID => OwnedValue::Null,
        ref other => return Err(StoreError::Type(format!("column {i}: unsupported type {other}; cast it to text or bigint"))),
    })
}

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Float(v) if *ty == Type::FLOAT4 => (v as f32).to_sql(ty, out),
            Value::Float(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn statement_error(e: postgres::Error) -> StoreError {
    // A lost connection, or an I/O error on the socket (no SQLSTATE: the server never
    // answered); conversion errors (a value out of a column's range) have neither.
    let lost = e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let transient = lost || e.code().is_some_and(transient_state);
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    StoreError::Statement { message, transient }
}

/// True for a SQLSTATE that says the server or the session failed, not the statement:
/// trying the same transaction again later may succeed. Whole classes: 08 (connection
/// exception), 40 (transaction rollback: serialization failure, deadlock), 53
/// (insufficient resources: disk full, out of memory, too many connections), 57 (operator
/// intervention: `statement_timeout`'s query_canceled, an administrator's shutdown); and
/// 25006 (read-only transaction: the server became a standby in a failover), 25P03 (idle
/// transaction timeout), 55P03 (lock not available: `lock_timeout`), 58030 (I/O error);
/// and 42501 (insufficient privilege: an operator revoked the projector's rights, or has
/// not granted them yet). That last one is in the class of the projection's own SQL, but
/// it says nothing about the event: dead-lettering valid events while the rights are
/// missing left the view diverged from the log for good once they were granted again
/// (an outside probe saw 303 letters and 47 wrong rows); waiting loses nothing.
///
/// What the projection's own SQL gets wrong the same way every time stays permanent:
/// syntax and undefined objects (42), constraint violations (23), data exceptions (22),
/// and, inside the classes above, a protocol violation (08P01: a bind with the wrong
/// number of parameters) and an integrity violation found at commit (40002).
fn transient_state(code: &SqlState) -> bool {
    let code = code.code();
    match code {
        "08P01" | "40002" => false,
        "25006" | "25P03" | "42501" | "55P03" | "58030" => true,
        _ => matches!(code.get(..2), Some("08" | "40" | "53" | "57")),
    }
}

/// `error` and its chain of sources, joined with `: `.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store as _;

    #[test]
    fn server_and_session_failures_are_transient_statement_errors_are_not() {
        let transient = [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::QUERY_CANCELED,
            SqlState::DISK_FULL,
            SqlState::OUT_OF_MEMORY,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::INSUFFICIENT_RESOURCES,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            SqlState::CRASH_SHUTDOWN,
            SqlState::IO_ERROR,
            SqlState::INSUFFICIENT_PRIVILEGE,
        ];
        for code in &transient {
            assert!(transient_state(code), "{} must be transient", code.code());
        }
        let permanent = [
            SqlState::SYNTAX_ERROR,
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::UNIQUE_VIOLATION,
            SqlState::NOT_NULL_VIOLATION,
            SqlState::CHECK_VIOLATION,
            SqlState::DIVISION_BY_ZERO,
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            SqlState::INVALID_TEXT_REPRESENTATION,
            SqlState::IN_FAILED_SQL_TRANSACTION,
            SqlState::PROTOCOL_VIOLATION,
            SqlState::T_R_INTEGRITY_CONSTRAINT_VIOLATION,
            SqlState::RAISE_EXCEPTION,
            SqlState::from_code("4"),
        ];
        for code in &permanent {
            assert!(!transient_state(code), "{} must be permanent", code.code());
        }
    }

    #[test]
    fn a_failing_connect_names_the_store_without_its_password() {
        let store = PostgresStore::new("postgres://herald:s3cret-pw@127.0.0.1:1/views?connect_timeout=5").expect("a valid URL");
        let Err(err) = store.connect() else { panic!("nothing listens on port 1") };
        for shown in [err.to_string(), format!("{err:?}"), format!("{store:?}")] {
            assert!(!shown.contains("s3cret-pw"), "password shown: {shown}");
        }
        assert!(err.to_string().contains("postgres://herald:***@127.0.0.1:1/views"), "{err}");
        let err = PostgresStore::new("postgres://herald:s3cret-pw@db:notaport/views").expect_err("a bad port");
        assert!(!format!("{err} {err:?}").contains("s3cret-pw"), "{err:?}");
        let Err(err) = crate::store::open("mysql://herald:s3cret-pw@db/views") else { panic!("not a store this build knows") };
        assert!(!format!("{err} {err:?}").contains("s3cret-pw"), "{err:?}");
    }
}
