//! The store's bulk ceiling: the rows the projector writes, computed beforehand (folded
//! per partition in batches, as the projector folds them), written with the fastest ways
//! each database offers, each batch in one transaction with a position compare-and-set.
//! No Kafka, no decoding, no reads: what the database alone absorbs.

use std::collections::HashMap;
use std::time::Instant;

use herald_bus::Envelope;
use herald_shop::OrderEvent;
use postgres::types::{ToSql, Type};

/// The rows one batch writes: changed orders (full rows) and each customer's change.
#[derive(Default)]
pub struct Rows {
    pub events: usize,
    pub order_ids: Vec<String>,
    pub order_customers: Vec<String>,
    pub order_totals: Vec<i64>,
    pub order_states: Vec<&'static str>,
    pub customers: Vec<String>,
    pub counts: Vec<i64>,
    pub cents: Vec<i64>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.order_ids.len() + self.customers.len()
    }
}

/// The envelopes by partition in offset order, in batches of at most `batch`.
pub fn split(envelopes: Vec<Envelope<OrderEvent>>, batch: usize) -> Vec<Vec<Envelope<OrderEvent>>> {
    let mut by_partition: std::collections::BTreeMap<i32, Vec<Envelope<OrderEvent>>> = Default::default();
    for e in envelopes {
        by_partition.entry(e.position.partition).or_default().push(e);
    }
    let mut out = Vec::new();
    for (_, mut events) in by_partition {
        events.sort_by_key(|e| e.position.offset);
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            out.push(events.by_ref().take(batch).collect());
        }
    }
    out
}

/// The projection's own batched apply (`apply_batch`, through the store's `Tx`) fed the
/// same batches from memory, with the projector's bookkeeping (live-version check and
/// position compare-and-set): what the projector would do with no Kafka, no decoding and
/// no waiting on the poll loop; events/s.
pub fn projection(url: &str, batches: &[Vec<Envelope<OrderEvent>>]) -> anyhow::Result<f64> {
    use herald_projector::position::{self, Key};
    use herald_projector::Projection;
    let store = herald_projector::store::open(url)?;
    let mut conn = store.connect()?;
    let mut tx = conn.begin(1)?;
    position::migrate(tx.as_tx())?;
    crate::projection::OrderTotals.migrate(tx.as_tx())?;
    tx.commit()?;
    let key = Key { projection: "memory".into(), version: 1, topic: "t".into() };
    let started = Instant::now();
    let mut events = 0;
    let mut at: HashMap<i32, i64> = HashMap::new();
    for batch in batches {
        let Some(first) = batch.first() else { continue };
        let partition = first.position.partition;
        let mut tx = conn.begin(1)?;
        let _ = position::live_version(tx.as_tx(), "memory")?;
        let from = at.get(&partition).copied();
        let to = from.unwrap_or(0) + batch.len() as i64;
        anyhow::ensure!(position::advance(tx.as_tx(), &key, partition, from, to)?, "position moved");
        let refs: Vec<&Envelope<OrderEvent>> = batch.iter().collect();
        crate::projection::OrderTotals.apply_batch(tx.as_tx(), &refs).map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit()?;
        at.insert(partition, to);
        events += batch.len();
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// The batches of [`split`], each folded as `order_totals` folds it (from an empty view).
pub fn fold_batches(batches: &[Vec<Envelope<OrderEvent>>]) -> Vec<Rows> {
    // order → (customer, total, cancelled)
    let mut orders: HashMap<String, (String, i64, bool)> = HashMap::new();
    let mut out = Vec::new();
    {
        for chunk in batches {
            let mut changed: std::collections::BTreeSet<String> = Default::default();
            let mut sums: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
            for e in chunk {
                match &e.event {
                    OrderEvent::Placed(p) if !orders.contains_key(&p.order_id) => {
                        orders.insert(p.order_id.clone(), (p.customer_id.clone(), p.total_cents, false));
                        changed.insert(p.order_id.clone());
                        let s = sums.entry(p.customer_id.clone()).or_default();
                        *s = (s.0 + 1, s.1 + p.total_cents);
                    }
                    OrderEvent::Cancelled(c) => {
                        if let Some(o) = orders.get_mut(&c.order_id)
                            && !o.2
                        {
                            o.2 = true;
                            changed.insert(c.order_id.clone());
                            let s = sums.entry(o.0.clone()).or_default();
                            *s = (s.0 - 1, s.1 - o.1);
                        }
                    }
                    _ => {}
                }
            }
            let mut rows = Rows { events: chunk.len(), ..Rows::default() };
            for id in changed {
                let (customer, total, cancelled) = &orders[&id];
                rows.order_ids.push(id);
                rows.order_customers.push(customer.clone());
                rows.order_totals.push(*total);
                rows.order_states.push(if *cancelled { "cancelled" } else { "placed" });
            }
            for (customer, (n, c)) in sums {
                rows.customers.push(customer);
                rows.counts.push(n);
                rows.cents.push(c);
            }
            out.push(rows);
        }
    }
    out
}

const TABLES: &str = "
CREATE TABLE orders_c (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, total_cents BIGINT NOT NULL, state TEXT NOT NULL);
CREATE TABLE totals_c (customer_id TEXT PRIMARY KEY, orders BIGINT NOT NULL, total_cents BIGINT NOT NULL);
CREATE TABLE positions_c (projection TEXT NOT NULL, partition_id BIGINT NOT NULL, next_offset BIGINT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (projection, partition_id));
INSERT INTO positions_c VALUES ('c', 0, 0, '');
";
const ORDERS_CONFLICT: &str = "ON CONFLICT (order_id) DO UPDATE SET state = excluded.state";
const TOTALS_CONFLICT: &str = "ON CONFLICT (customer_id) DO UPDATE SET orders = totals_c.orders + excluded.orders, total_cents = totals_c.total_cents + excluded.total_cents";
const ADVANCE: &str = "UPDATE positions_c SET next_offset = $1, updated_at = $2 WHERE projection = 'c' AND partition_id = 0 AND next_offset = $3";

/// The ways to write a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// PostgreSQL: one `INSERT ... VALUES (...), (...), ... ON CONFLICT` per table.
    PgValues,
    /// PostgreSQL: one `INSERT ... SELECT * FROM UNNEST($1::text[], ...) ON CONFLICT` per table.
    PgUnnest,
    /// PostgreSQL: binary `COPY` into a temporary staging table, then one
    /// `INSERT ... SELECT ... ON CONFLICT` per table.
    PgCopy,
    /// SQLite: one prepared statement run per row.
    SqlitePrepared,
    /// SQLite: one `INSERT ... VALUES (...), (...), ... ON CONFLICT` per table.
    SqliteValues,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::PgValues => "multi-row VALUES",
            Method::PgUnnest => "UNNEST arrays",
            Method::PgCopy => "binary COPY + staging",
            Method::SqlitePrepared => "prepared per row",
            Method::SqliteValues => "multi-row VALUES",
        }
    }
}

fn values_list(rows: usize, columns: usize) -> String {
    (0..rows).map(|r| format!("({})", (1..=columns).map(|c| format!("${}", r * columns + c)).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join(", ")
}

/// Writes `batches` to the PostgreSQL database at `url` with `method`; events/s.
pub fn postgres(url: &str, batches: &[Rows], method: Method) -> anyhow::Result<f64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(TABLES)?;
    // The staging tables of the COPY method (emptied by each commit).
    client.batch_execute("CREATE TEMP TABLE orders_s (LIKE orders_c) ON COMMIT DELETE ROWS; CREATE TEMP TABLE totals_s (LIKE totals_c) ON COMMIT DELETE ROWS;")?;
    let unnest_orders = client.prepare(&format!("INSERT INTO orders_c SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[]) {ORDERS_CONFLICT}"))?;
    let unnest_totals = client.prepare(&format!("INSERT INTO totals_c SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[]) {TOTALS_CONFLICT}"))?;
    let from_stage_orders = client.prepare(&format!("INSERT INTO orders_c SELECT * FROM orders_s {ORDERS_CONFLICT}"))?;
    let from_stage_totals = client.prepare(&format!("INSERT INTO totals_c SELECT * FROM totals_s {TOTALS_CONFLICT}"))?;
    let advance = client.prepare(ADVANCE)?;
    let mut values: HashMap<(usize, bool), postgres::Statement> = HashMap::new();
    let started = Instant::now();
    let mut at = 0i64;
    let mut events = 0;
    for rows in batches {
        let mut tx = client.transaction()?;
        let to = at + rows.events as i64;
        let now = chrono::Utc::now().to_rfc3339();
        anyhow::ensure!(tx.execute(&advance, &[&to, &now, &at])? == 1, "position moved");
        at = to;
        match method {
            Method::PgUnnest => {
                tx.execute(&unnest_orders, &[&rows.order_ids, &rows.order_customers, &rows.order_totals, &rows.order_states])?;
                tx.execute(&unnest_totals, &[&rows.customers, &rows.counts, &rows.cents])?;
            }
            Method::PgValues => {
                for (orders, n) in [(true, rows.order_ids.len()), (false, rows.customers.len())] {
                    if n == 0 {
                        continue;
                    }
                    if let std::collections::hash_map::Entry::Vacant(slot) = values.entry((n, orders)) {
                        let sql = if orders {
                            format!("INSERT INTO orders_c VALUES {} {ORDERS_CONFLICT}", values_list(n, 4))
                        } else {
                            format!("INSERT INTO totals_c VALUES {} {TOTALS_CONFLICT}", values_list(n, 3))
                        };
                        slot.insert(tx.prepare(&sql)?);
                    }
                    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
                    for i in 0..n {
                        if orders {
                            params.extend([&rows.order_ids[i] as &(dyn ToSql + Sync), &rows.order_customers[i], &rows.order_totals[i], &rows.order_states[i]]);
                        } else {
                            params.extend([&rows.customers[i] as &(dyn ToSql + Sync), &rows.counts[i], &rows.cents[i]]);
                        }
                    }
                    tx.execute(&values[&(n, orders)], &params)?;
                }
            }
            Method::PgCopy => {
                let mut w = postgres::binary_copy::BinaryCopyInWriter::new(tx.copy_in("COPY orders_s FROM STDIN BINARY")?, &[Type::TEXT, Type::TEXT, Type::INT8, Type::TEXT]);
                for i in 0..rows.order_ids.len() {
                    w.write(&[&rows.order_ids[i], &rows.order_customers[i], &rows.order_totals[i], &rows.order_states[i]])?;
                }
                w.finish()?;
                let mut w = postgres::binary_copy::BinaryCopyInWriter::new(tx.copy_in("COPY totals_s FROM STDIN BINARY")?, &[Type::TEXT, Type::INT8, Type::INT8]);
                for i in 0..rows.customers.len() {
                    w.write(&[&rows.customers[i], &rows.counts[i], &rows.cents[i]])?;
                }
                w.finish()?;
                tx.execute(&from_stage_orders, &[])?;
                tx.execute(&from_stage_totals, &[])?;
            }
            _ => anyhow::bail!("{method:?} is not a PostgreSQL method"),
        }
        tx.commit()?;
        events += rows.events;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Writes `batches` to the SQLite file at `path` (WAL, `synchronous=NORMAL`, as the
/// projector's store) with `method`; events/s.
pub fn sqlite(path: &str, batches: &[Rows], method: Method) -> anyhow::Result<f64> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(TABLES)?;
    let advance = ADVANCE.replace("$1", "?1").replace("$2", "?2").replace("$3", "?3");
    let orders_one = format!("INSERT INTO orders_c VALUES (?1, ?2, ?3, ?4) {ORDERS_CONFLICT}");
    let totals_one = format!("INSERT INTO totals_c VALUES (?1, ?2, ?3) {TOTALS_CONFLICT}");
    let started = Instant::now();
    let mut at = 0i64;
    let mut events = 0;
    for rows in batches {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let to = at + rows.events as i64;
        let now = chrono::Utc::now().to_rfc3339();
        anyhow::ensure!(tx.prepare_cached(&advance)?.execute(rusqlite::params![to, now, at])? == 1, "position moved");
        at = to;
        match method {
            Method::SqlitePrepared => {
                let mut s = tx.prepare_cached(&orders_one)?;
                for i in 0..rows.order_ids.len() {
                    s.execute(rusqlite::params![rows.order_ids[i], rows.order_customers[i], rows.order_totals[i], rows.order_states[i]])?;
                }
                let mut s = tx.prepare_cached(&totals_one)?;
                for i in 0..rows.customers.len() {
                    s.execute(rusqlite::params![rows.customers[i], rows.counts[i], rows.cents[i]])?;
                }
            }
            Method::SqliteValues => {
                let n = rows.order_ids.len();
                if n > 0 {
                    let sql = format!("INSERT INTO orders_c VALUES {} {ORDERS_CONFLICT}", values_list(n, 4).replace('$', "?"));
                    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(n * 4);
                    for i in 0..n {
                        params.extend([&rows.order_ids[i] as &dyn rusqlite::ToSql, &rows.order_customers[i], &rows.order_totals[i], &rows.order_states[i]]);
                    }
                    tx.prepare_cached(&sql)?.execute(params.as_slice())?;
                }
                let n = rows.customers.len();
                if n > 0 {
                    let sql = format!("INSERT INTO totals_c VALUES {} {TOTALS_CONFLICT}", values_list(n, 3).replace('$', "?"));
                    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(n * 3);
                    for i in 0..n {
                        params.extend([&rows.customers[i] as &dyn rusqlite::ToSql, &rows.counts[i], &rows.cents[i]]);
                    }
                    tx.prepare_cached(&sql)?.execute(params.as_slice())?;
                }
            }
            _ => anyhow::bail!("{method:?} is not a SQLite method"),
        }
        tx.commit()?;
        events += rows.events;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}
