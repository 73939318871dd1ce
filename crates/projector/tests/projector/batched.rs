//! The batched path of `order_totals` (`apply_batch`: one read, a fold in memory, one
//! write per table) leaves both tables exactly as the per-event path (`apply`) does, and
//! its view equals the independent reference fold, on SQLite and PostgreSQL: random
//! streams with repeated placements, cancellations of unknown, known and cancelled orders,
//! the same order placed and cancelled within one batch, redelivered stretches of events,
//! split into batches of random sizes; and the store's row helpers run as documented.

use std::collections::BTreeMap;

use herald_bus::{Envelope, EventFamily, Metadata, Position};
use herald_projector::{store, Column, Projection, Value};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderEvent, OrderPlaced};
use crate::projection::OrderTotals;
use rand::{Rng, SeedableRng};

use crate::support::*;

/// order_id → (customer_id, total_cents, state)
type Orders = BTreeMap<String, (String, i64, String)>;

fn envelope(event: OrderEvent, offset: i64) -> Envelope<OrderEvent> {
    let meta = Metadata::new(event.type_name(), "/test", event.aggregate_id());
    Envelope { event, meta, position: Position { topic: "t".into(), partition: 0, offset } }
}

/// A random stream over few orders and customers, with stretches of it delivered again.
fn stream(seed: u64, n: usize) -> Vec<Envelope<OrderEvent>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut events: Vec<OrderEvent> = Vec::with_capacity(n);
    while events.len() < n {
        if events.len() > 20 && rng.random_range(0..30) == 0 {
            // Redelivery: a stretch of earlier events again.
            let from = rng.random_range(0..events.len() - 10);
            let again: Vec<OrderEvent> = events[from..from + rng.random_range(1..10)].to_vec();
            events.extend(again);
            continue;
        }
        let id = format!("o-{}", rng.random_range(0..60));
        events.push(match rng.random_range(0..10) {
            0..=5 => OrderEvent::Placed(OrderPlaced::example(&id, &format!("c-{}", rng.random_range(0..12)), rng.random_range(1..10_000))),
            6 => OrderEvent::Confirmed(OrderConfirmed::example(&id, "p")),
            _ => OrderEvent::Cancelled(OrderCancelled::example(&id, "changed mind", None)),
        });
    }
    events.into_iter().enumerate().map(|(i, e)| envelope(e, i as i64)).collect()
}

/// Applies `events` to a fresh store in transactions of random sizes (seeded), batched
/// or event by event; returns the view and the orders table.
async fn project(backend: Backend, events: Vec<Envelope<OrderEvent>>, batched: bool, seed: u64) -> Option<(View, Orders)> {
    let url = fresh_store(backend).await?;
    let store = store::open(&url).expect("store");
    tokio::task::spawn_blocking(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.begin(1).expect("begin");
        OrderTotals.migrate(tx.as_tx()).expect("migrate");
        tx.commit().expect("commit");
        let mut rest = &events[..];
        while !rest.is_empty() {
            let (batch, after) = rest.split_at(rng.random_range(1..=rest.len().min(120)));
            rest = after;
            let mut tx = conn.begin(1).expect("begin");
            if batched {
                let refs: Vec<&Envelope<OrderEvent>> = batch.iter().collect();
                OrderTotals.apply_batch(tx.as_tx(), &refs).expect("apply_batch");
            } else {
                batch.iter().try_for_each(|e| OrderTotals.apply(tx.as_tx(), e)).expect("apply");
            }
            tx.commit().expect("commit");
        }
        let mut tx = conn.read().expect("read");
        let view = tx.query("SELECT customer_id, orders, total_cents FROM customer_totals__v1", &[]).expect("view");
        let orders = tx.query("SELECT order_id, customer_id, total_cents, state FROM order_totals_orders__v1", &[]).expect("orders");
        let view = view.iter().map(|r| (r.text(0).expect("id").to_owned(), (r.int(1).expect("n"), r.int(2).expect("cents")))).collect();
        let orders = orders
            .iter()
            .map(|r| (r.text(0).expect("id").to_owned(), (r.text(1).expect("c").to_owned(), r.int(2).expect("t"), r.text(3).expect("s").to_owned())))
            .collect();
        Some((view, orders))
    })
    .await
    .expect("task")
}

async fn batched_equals_per_event(backend: Backend) {
    for seed in 0..4 {
        let events = stream(seed, 1500);
        let mut fold = Fold::default();
        events.iter().for_each(|e| assert!(fold.apply(&e.event)));
        let Some(per_event) = project(backend, events.clone(), false, seed).await else { return };
        let Some(batched) = project(backend, events, true, seed + 100).await else { return };
        assert_eq!(batched.0, per_event.0, "{backend:?} seed {seed}: customer_totals, batched vs per event");
        assert_eq!(batched.1, per_event.1, "{backend:?} seed {seed}: orders, batched vs per event");
        assert_eq!(non_zero(&batched.0), non_zero(&fold.view), "{backend:?} seed {seed}: batched vs the reference fold");
        let expected: Orders = fold.orders.into_iter().map(|(k, (c, t, live))| (k, (c, t, if live { "placed" } else { "cancelled" }.to_owned()))).collect();
        assert_eq!(batched.1, expected, "{backend:?} seed {seed}: orders vs the reference fold");
    }
}

#[tokio::test]
async fn batched_sqlite_view_equals_the_per_event_view_and_the_fold() {
    batched_equals_per_event(Backend::Sqlite).await;
}

#[tokio::test]
async fn batched_postgres_view_equals_the_per_event_view_and_the_fold() {
    batched_equals_per_event(Backend::Postgres).await;
}

async fn rows_helpers(backend: Backend) {
    let Some(url) = fresh_store(backend).await else { return };
    let store = store::open(&url).expect("store");
    tokio::task::spawn_blocking(move || {
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.begin(1).expect("begin");
        tx.batch("CREATE TABLE kv (k TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT)").expect("create");
        let sql = "INSERT INTO kv (k, n, note) {rows} ON CONFLICT (k) DO UPDATE SET n = kv.n + excluded.n, note = excluded.note";
        let changed = tx.execute_rows(sql, &[Column::Text(&["a", "b"]), Column::Int(&[1, 2]), Column::OptText(&[None, Some("x")])]).expect("insert");
        assert_eq!(changed, 2);
        tx.execute_rows(sql, &[Column::Text(&["b", "c"]), Column::Int(&[10, 3]), Column::OptText(&[Some("y"), None])]).expect("upsert");
        assert_eq!(tx.execute_rows(sql, &[Column::Text(&[]), Column::Int(&[]), Column::OptText(&[])]).expect("no rows"), 0);
        assert!(tx.execute_rows(sql, &[Column::Text(&["d"]), Column::Int(&[]), Column::OptText(&[None])]).is_err(), "uneven columns are refused");
        let mut rows = tx.query_rows("SELECT k, n, note FROM kv WHERE k IN ({rows})", &[Column::Text(&["b", "c", "z"])]).expect("query");
        rows.sort_by(|a, b| a.text(0).ok().cmp(&b.text(0).ok()));
        let rows: Vec<serde_json::Value> = rows.iter().map(|r| r.to_json()).collect();
        assert_eq!(rows, vec![serde_json::json!({"k": "b", "n": 12, "note": "y"}), serde_json::json!({"k": "c", "n": 3, "note": null})]);
        let one = tx.query_opt("SELECT n FROM kv WHERE k = $1", &[Value::Text("a")]).expect("a").expect("row a");
        assert_eq!(one.int(0).expect("n"), 1);
    })
    .await
    .expect("task");
}

#[tokio::test]
async fn sqlite_row_helpers_upsert_and_query_many_rows() {
    rows_helpers(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_row_helpers_upsert_and_query_many_rows() {
    rows_helpers(Backend::Postgres).await;
}
