//! Many rows in one statement: [`Column`]s bound as a whole, and the `{rows}` marker that
//! each backend expands to its fastest row source.
//!
//! `INSERT INTO t (k, n) {rows} ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n` with
//! the columns `[Column::Text(&keys), Column::Int(&counts)]` becomes, on PostgreSQL, one
//! statement over arrays (`SELECT * FROM UNNEST($1::text[], $2::int8[])`), and on SQLite
//! the same prepared statement once per row (`VALUES ($1, $2)`), which is SQLite's fastest
//! batched write inside one transaction.

use super::{StoreError, Tx, Value};

/// The marker in a statement that stands for the rows ([`Tx::execute_rows`]).
pub const ROWS: &str = "{rows}";

/// One column of the rows of [`Tx::execute_rows`] and [`Tx::query_rows`]: every column of
/// a call holds the same number of values, row `i` is the `i`-th value of each.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Column<'a> {
    /// 64-bit integers (`BIGINT`).
    Int(&'a [i64]),
    /// Integers or `NULL`.
    OptInt(&'a [Option<i64>]),
    /// Doubles (`DOUBLE PRECISION` / `REAL`).
    Float(&'a [f64]),
    /// Text.
    Text(&'a [&'a str]),
    /// Text or `NULL`.
    OptText(&'a [Option<&'a str>]),
}

impl<'a> Column<'a> {
    /// The number of values (rows) in the column.
    pub fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::OptInt(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::OptText(v) => v.len(),
        }
    }

    /// True when the column holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of row `i`.
    pub(crate) fn value(&self, i: usize) -> Value<'a> {
        match *self {
            Column::Int(v) => Value::Int(v[i]),
            Column::OptInt(v) => v[i].into(),
            Column::Float(v) => Value::Float(v[i]),
            Column::Text(v) => Value::Text(v[i]),
            Column::OptText(v) => v[i].map_or(Value::Null, Value::Text),
        }
    }

    /// PostgreSQL's array type of the column, for the `UNNEST` casts.
    #[cfg(feature = "postgres")]
    pub(crate) fn pg_array(&self) -> &'static str {
        match self {
            Column::Int(_) | Column::OptInt(_) => "int8[]",
            Column::Float(_) => "float8[]",
            Column::Text(_) | Column::OptText(_) => "text[]",
        }
    }
}

/// The number of rows of `columns`, or an error when they differ in length or `sql` has
/// no `{rows}` marker.
pub(crate) fn count(sql: &str, columns: &[Column<'_>]) -> Result<usize, StoreError> {
    let invalid = |message: String| StoreError::Statement { message, transient: false };
    if !sql.contains(ROWS) {
        return Err(invalid(format!("no {ROWS} marker in: {sql}")));
    }
    let n = columns.first().map_or(0, Column::len);
    if let Some(c) = columns.iter().find(|c| c.len() != n) {
        return Err(invalid(format!("columns of different lengths ({n} and {}) for: {sql}", c.len())));
    }
    Ok(n)
}

/// `sql` with `{rows}` as one row of parameters, `VALUES ($1, ..., $n)`.
pub(crate) fn one_row_sql(sql: &str, columns: usize) -> String {
    let params = (1..=columns).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    sql.replace(ROWS, &format!("VALUES ({params})"))
}

/// What [`Tx::execute_each_row`] (and so [`Tx::execute_rows`]) does where the store has
/// nothing better: the statement once per row, prepared once (the statement caches of
/// both stores keep it), each row's count of changed rows.
pub(crate) fn changes_each(tx: &mut (impl Tx + ?Sized), sql: &str, columns: &[Column<'_>]) -> Result<Vec<u64>, StoreError> {
    let n = count(sql, columns)?;
    let one = one_row_sql(sql, columns.len());
    let mut params = Vec::with_capacity(columns.len());
    let mut changed = Vec::with_capacity(n);
    for i in 0..n {
        params.clear();
        params.extend(columns.iter().map(|c| c.value(i)));
        changed.push(tx.execute(&one, &params)?);
    }
    Ok(changed)
}

/// What [`Tx::query_rows`] does where the store has nothing better: the query once per
/// row, the results concatenated.
pub(crate) fn query_each(tx: &mut (impl Tx + ?Sized), sql: &str, columns: &[Column<'_>]) -> Result<Vec<super::Row>, StoreError> {
    let n = count(sql, columns)?;
    let one = one_row_sql(sql, columns.len());
    let mut params = Vec::with_capacity(columns.len());
    let mut rows = Vec::new();
    for i in 0..n {
        params.clear();
        params.extend(columns.iter().map(|c| c.value(i)));
        rows.extend(tx.query(&one, &params)?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_becomes_one_row_of_parameters() {
        assert_eq!(one_row_sql("INSERT INTO t (a, b) {rows} ON CONFLICT DO NOTHING", 2), "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING");
        assert_eq!(count("SELECT 1 WHERE k IN ({rows})", &[Column::Text(&["a", "b"])]).ok(), Some(2));
        assert!(count("INSERT INTO t VALUES ($1)", &[Column::Int(&[1])]).is_err(), "no marker");
        assert!(count("INSERT INTO t (a, b) {rows}", &[Column::Int(&[1]), Column::Int(&[1, 2])]).is_err(), "uneven columns");
    }
}
