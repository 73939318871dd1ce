//! PostgreSQL: two topics' events of one saga applied by concurrent transactions (as the
//! tracker's projectors do) are judged from both, because each transaction locks the
//! saga's row first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_bus::{Envelope, EventFamily, Metadata, Position};
use herald_projector::{Projection, Value};
use herald_tracker::shop::Shop;
use herald_tracker::{Observed, TrackedSaga, Tracker};

fn envelope(event_type: &str, id: &str, cause: Option<&str>, seconds: i64, topic: &str) -> Envelope<Observed<Shop>> {
    let known = Shop::schemas().latest(event_type).expect("a shop type");
    let event = Observed::<Shop>::decode(event_type, known, &[]).unwrap().expect("known");
    let mut meta = Metadata::new(event_type, "/test", "order-1");
    meta.id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes());
    meta.correlation_id = Some("saga-1".into());
    meta.causation_id = cause.map(|c| uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, c.as_bytes()).to_string());
    meta.time = chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000 + seconds);
    Envelope { event, meta, position: Position { topic: topic.into(), partition: 0, offset: seconds } }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_of_one_saga_see_each_other() {
    let Some(url) = herald_testkit::fresh_postgres("herald_tracker").await else { return };
    // PostgreSQL's client blocks: the test runs on a blocking thread.
    tokio::task::spawn_blocking(move || two_transactions(&url)).await.expect("the test thread");
}

fn two_transactions(url: &str) {
    let store = herald_projector::store::open(url).unwrap();
    let tracker = Tracker::<Shop>::new();
    {
        let mut conn = store.connect().unwrap();
        let mut tx = conn.begin(1).unwrap();
        tracker.migrate(tx.as_tx()).unwrap();
        // The saga exists already (its row committed).
        tracker.apply(tx.as_tx(), &envelope("shop.orders.OrderPlaced", "placed", None, 0, "shop.orders")).unwrap();
        tx.commit().unwrap();
    }
    // Transaction A records StockReserved and holds the saga's row.
    let mut conn_a = store.connect().unwrap();
    let mut a = conn_a.begin(1).unwrap();
    tracker.apply(a.as_tx(), &envelope("shop.inventory.StockReserved", "reserved", Some("placed"), 1, "shop.inventory")).unwrap();
    // Transaction B, another topic's projector, records PaymentCharged meanwhile.
    let (store_b, tracker_b) = (store.clone(), tracker.clone());
    let b = std::thread::spawn(move || {
        let mut conn = store_b.connect().unwrap();
        let mut b = conn.begin(1).unwrap();
        tracker_b.apply(b.as_tx(), &envelope("shop.payments.PaymentCharged", "charged", Some("reserved"), 2, "shop.payments")).unwrap();
        b.commit().unwrap();
    });
    // B waits for A's row lock (seen in pg_stat_activity) before A commits.
    let mut watch = store.connect().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut r = watch.read().unwrap();
        let waiting = r.query("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()", &[]).unwrap()[0].int(0).unwrap();
        r.rollback().unwrap();
        if waiting > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "transaction B never waited for A's lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.commit().unwrap();
    b.join().unwrap();
    let mut r = watch.read().unwrap();
    let row = r.query_opt("SELECT events, phase, waiting FROM sagas__v1 WHERE correlation_id = $1", &[Value::Text("saga-1")]).unwrap().expect("the saga");
    // B judged the saga with A's event: three events, waiting only for the outcome.
    assert_eq!((row.int(0).unwrap(), row.text(1).unwrap(), row.text(2).unwrap()), (3, "running", "an outcome (shop.orders.OrderCancelled or shop.orders.OrderConfirmed)"), "{row:?}");
}

/// Two projectors' batches touching two sagas in opposite orders (orders: saga 1 then 2;
/// inventory: saga 2 then 1) both commit: tracker transactions take one advisory lock
/// first, so they never deadlock on the sagas' rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_touching_sagas_in_opposite_orders_do_not_deadlock() {
    let Some(url) = herald_testkit::fresh_postgres("herald_tracker").await else { return };
    tokio::task::spawn_blocking(move || opposite_orders(&url)).await.expect("the test thread");
}

fn in_saga(mut e: Envelope<Observed<Shop>>, saga: &str) -> Envelope<Observed<Shop>> {
    e.meta.correlation_id = Some(saga.into());
    e.meta.id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{saga}-{}", e.meta.id).as_bytes());
    e
}

fn opposite_orders(url: &str) {
    let store = herald_projector::store::open(url).unwrap();
    let tracker = Tracker::<Shop>::new();
    {
        let mut conn = store.connect().unwrap();
        let mut tx = conn.begin(1).unwrap();
        tracker.migrate(tx.as_tx()).unwrap();
        for saga in ["saga-1", "saga-2"] {
            tracker.apply(tx.as_tx(), &in_saga(envelope("shop.orders.OrderPlaced", "placed", None, 0, "shop.orders"), saga)).unwrap();
        }
        tx.commit().unwrap();
    }
    let mut conn_a = store.connect().unwrap();
    let mut a = conn_a.begin(1).unwrap();
    tracker.apply(a.as_tx(), &in_saga(envelope("shop.orders.OrderCancelled", "cancelled", Some("placed"), 3, "shop.orders"), "saga-1")).unwrap();
    let (store_b, tracker_b) = (store.clone(), tracker.clone());
    let b = std::thread::spawn(move || -> Result<(), String> {
        let mut conn = store_b.connect().map_err(|e| e.to_string())?;
        let mut b = conn.begin(1).map_err(|e| e.to_string())?;
        for saga in ["saga-2", "saga-1"] {
            tracker_b.apply(b.as_tx(), &in_saga(envelope("shop.inventory.StockRejected", "rejected", Some("placed"), 1, "shop.inventory"), saga)).map_err(|e| e.to_string())?;
        }
        b.commit().map_err(|e| e.to_string())
    });
    // B waits (for A) before A goes on to saga 2.
    let mut watch = store.connect().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut r = watch.read().unwrap();
        let waiting = r.query("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()", &[]).unwrap()[0].int(0).unwrap();
        r.rollback().unwrap();
        if waiting > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "transaction B never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    tracker.apply(a.as_tx(), &in_saga(envelope("shop.orders.OrderCancelled", "cancelled", Some("placed"), 3, "shop.orders"), "saga-2")).expect("A is not a deadlock victim");
    a.commit().unwrap();
    b.join().unwrap().expect("B is not a deadlock victim");
    let mut r = watch.read().unwrap();
    let rows = r.query("SELECT correlation_id, events, phase FROM sagas__v1 ORDER BY correlation_id", &[]).unwrap();
    let got: Vec<(String, i64, String)> = rows.iter().map(|row| (row.text(0).unwrap().to_owned(), row.int(1).unwrap(), row.text(2).unwrap().to_owned())).collect();
    assert_eq!(got, [("saga-1".to_owned(), 3, "compensated".to_owned()), ("saga-2".to_owned(), 3, "compensated".to_owned())]);
}
