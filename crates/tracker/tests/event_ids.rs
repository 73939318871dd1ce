//! Event ids: CloudEvents makes `ce_id` unique only together with `ce_source`, so the
//! tracker records `ce_id` `42` from `/a` and from `/b` as two events, still recording a
//! replay once; and a store written when events were keyed by `ce_id` alone keeps working
//! after its migration. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use herald_bus::{Envelope, EventFamily, Metadata, Position};
use herald_projector::{Projection, Store, Value};
use herald_tracker::query::{self, DEFAULT_STUCK_AFTER};
use herald_tracker::shop::Shop;
use herald_tracker::{Observed, TrackedSaga, Tracker};

const PLACED: &str = "shop.orders.OrderPlaced";
const RESERVED: &str = "shop.inventory.StockReserved";

/// Event `event_type` of saga `saga` with `ce_id` `ce_id` from `source`, as Herald reads it
/// (a non-UUID `ce_id` gets the id of its source and `ce_id`).
fn envelope(event_type: &str, ce_id: &str, source: &str, saga: &str, offset: i64) -> Envelope<Observed<Shop>> {
    let known = Shop::schemas().latest(event_type).expect("a shop type");
    let event = Observed::<Shop>::decode(event_type, known, &[]).unwrap().expect("known");
    let mut meta = Metadata::new(event_type, source, format!("order-{saga}"));
    match uuid::Uuid::try_parse(ce_id) {
        Ok(id) => meta.id = id,
        Err(_) => (meta.id, meta.original_id) = (Metadata::id_of(source, ce_id), Some(ce_id.to_owned())),
    }
    meta.correlation_id = Some(saga.into());
    meta.time = chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000 + offset);
    let topic = event_type.rsplit_once('.').map(|(t, _)| t.to_owned()).unwrap_or_default();
    Envelope { event, meta, position: Position { topic, partition: 0, offset } }
}

fn sqlite() -> (Arc<dyn Store>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("herald-tracker-ids-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    (herald_projector::store::open(&format!("sqlite:{}", dir.join("sagas.db").display())).unwrap(), dir)
}

/// Makes version 1 live with its views, as the projector does for a new tracker.
fn go_live(tx: &mut dyn herald_projector::Tx) {
    herald_projector::position::migrate(tx).unwrap();
    herald_projector::position::set_live_version(tx, Shop::NAME, 1, None).unwrap();
    tx.batch("DROP VIEW IF EXISTS sagas; CREATE VIEW sagas AS SELECT * FROM sagas__v1; DROP VIEW IF EXISTS saga_events; CREATE VIEW saga_events AS SELECT * FROM saga_events__v1").unwrap();
}

/// Applies `envelopes` in one transaction.
fn apply(store: &Arc<dyn Store>, tracker: &Tracker<Shop>, envelopes: &[Envelope<Observed<Shop>>]) {
    let mut conn = store.connect().unwrap();
    let mut tx = conn.begin(1).unwrap();
    for e in envelopes {
        tracker.apply(tx.as_tx(), e).unwrap();
    }
    tx.commit().unwrap();
}

/// The ids as written (and sources) of saga `id`'s timeline, and its recorded event count.
fn timeline(store: &Arc<dyn Store>, id: &str) -> Option<(Vec<(String, String)>, i64)> {
    let mut conn = store.connect().unwrap();
    let shown = query::show(&mut *conn, id, chrono::Utc::now(), DEFAULT_STUCK_AFTER).unwrap()?;
    Some((shown.timeline.iter().map(|e| (e.event_id.clone(), e.source.clone())).collect(), shown.summary.events))
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

fn same_id_from_two_sources(store: &Arc<dyn Store>) {
    let tracker = Tracker::<Shop>::new();
    {
        let mut conn = store.connect().unwrap();
        let mut tx = conn.begin(1).unwrap();
        tracker.migrate(tx.as_tx()).unwrap();
        go_live(tx.as_tx());
        tx.commit().unwrap();
    }
    apply(store, &tracker, &[envelope(PLACED, "42", "/a", "s1", 0), envelope(RESERVED, "43", "/a", "s1", 1)]);
    // `42` again from another source, in another saga: another event. Then replays.
    apply(store, &tracker, &[envelope(PLACED, "42", "/b", "s2", 2), envelope(PLACED, "42", "/a", "s1", 0), envelope(PLACED, "42", "/b", "s2", 2)]);
    assert_eq!(timeline(store, "s1"), Some((pairs(&[("42", "/a"), ("43", "/a")]), 2)));
    assert_eq!(timeline(store, "s2"), Some((pairs(&[("42", "/b")]), 1)), "the second source's event 42 was dropped");
    // Herald's own events (UUID ids) are recorded once, whatever their source says.
    let id = uuid::Uuid::now_v7().to_string();
    apply(store, &tracker, &[envelope(RESERVED, &id, "/a", "s2", 3), envelope(RESERVED, &id, "/c", "s2", 3)]);
    assert_eq!(timeline(store, "s2"), Some((pairs(&[("42", "/b"), (&id, "/a")]), 2)));
    let mut conn = store.connect().unwrap();
    let counts = query::counts(&mut *conn, chrono::Utc::now(), DEFAULT_STUCK_AFTER).unwrap();
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 2);
}

#[test]
fn the_same_ce_id_from_two_sources_is_two_events_sqlite() {
    let (store, dir) = sqlite();
    same_id_from_two_sources(&store);
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ce_id_from_two_sources_is_two_events_postgres() {
    let Some(url) = herald_testkit::fresh_postgres("herald_tracker").await else { return };
    tokio::task::spawn_blocking(move || same_id_from_two_sources(&herald_projector::store::open(&url).unwrap())).await.expect("the test thread");
}

/// A store as the tracker wrote it when events were keyed by `ce_id` alone: saga `old`
/// with `42` from `/a` (a non-UUID id), `{UPPER}` (a UUID in upper case) and a UUID.
fn old_store(store: &Arc<dyn Store>, upper: &str, lower: &str) {
    let mut conn = store.connect().unwrap();
    let mut tx = conn.begin(1).unwrap();
    tx.batch(
        "CREATE TABLE sagas__v1 (correlation_id TEXT PRIMARY KEY, subject TEXT NOT NULL, first_ms BIGINT NOT NULL, last_ms BIGINT NOT NULL, \
         events BIGINT NOT NULL, phase TEXT NOT NULL, outcome TEXT, violation TEXT, waiting TEXT NOT NULL);
         CREATE TABLE saga_events__v1 (event_id TEXT PRIMARY KEY, correlation_id TEXT NOT NULL, causation_id TEXT, event_type TEXT NOT NULL, \
         source TEXT NOT NULL, subject TEXT NOT NULL, time_ms BIGINT NOT NULL, topic TEXT NOT NULL, kafka_partition BIGINT NOT NULL, kafka_offset BIGINT NOT NULL);
         CREATE INDEX saga_events__v1_saga ON saga_events__v1 (correlation_id)",
    )
    .unwrap();
    go_live(tx.as_tx());
    let t = 1_700_000_000_000_i64;
    tx.execute("INSERT INTO sagas__v1 VALUES ('old', 'order-old', $1, $2, 3, 'running', NULL, NULL, '')", &[Value::Int(t), Value::Int(t + 2000)]).unwrap();
    for (i, (id, ty)) in [("42", PLACED), (upper, RESERVED), (lower, "shop.payments.PaymentCharged")].into_iter().enumerate() {
        let i = i64::try_from(i).unwrap();
        let topic = ty.rsplit_once('.').map(|(t, _)| t).unwrap_or_default();
        tx.execute(
            "INSERT INTO saga_events__v1 VALUES ($1, 'old', NULL, $2, '/a', 'order-old', $3, $4, 0, $5)",
            &[Value::Text(id), Value::Text(ty), Value::Int(t + i * 1000), Value::Text(topic), Value::Int(i)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn old_store_keeps_working(store: &Arc<dyn Store>) {
    let upper_id = uuid::Uuid::now_v7();
    let upper = upper_id.to_string().to_uppercase();
    let lower = uuid::Uuid::now_v7().to_string();
    old_store(store, &upper, &lower);
    let tracker = Tracker::<Shop>::new();
    // The tracker's migration, twice (each start runs it).
    for _ in 0..2 {
        let mut conn = store.connect().unwrap();
        let mut tx = conn.begin(1).unwrap();
        tracker.migrate(tx.as_tx()).unwrap();
        tx.commit().unwrap();
    }
    let before = pairs(&[("42", "/a"), (&upper, "/a"), (&lower, "/a")]);
    assert_eq!(timeline(store, "old"), Some((before.clone(), 3)), "the old rows read as before");
    // Replays of the old events are recognised, whatever their id's form.
    let mut placed = envelope(PLACED, "42", "/a", "old", 0);
    let mut reserved = envelope(RESERVED, &upper, "/a", "old", 1);
    reserved.meta.original_id = Some(upper.clone());
    assert_eq!(reserved.meta.id, upper_id);
    let mut charged = envelope("shop.payments.PaymentCharged", &lower, "/a", "old", 2);
    for e in [&mut placed, &mut reserved, &mut charged] {
        e.meta.subject = "order-old".into();
    }
    apply(store, &tracker, &[placed, reserved, charged]);
    assert_eq!(timeline(store, "old"), Some((before, 3)), "a replayed old event was recorded again");
    // `42` from another source is another event.
    let mut other = envelope("shop.orders.OrderConfirmed", "42", "/b", "old", 3);
    other.meta.subject = "order-old".into();
    apply(store, &tracker, &[other]);
    let (events, n) = timeline(store, "old").expect("the saga");
    assert_eq!((events.last().cloned(), n), (Some(("42".to_owned(), "/b".to_owned())), 4));
    let mut conn = store.connect().unwrap();
    let shown = query::show(&mut *conn, "old", chrono::Utc::now(), DEFAULT_STUCK_AFTER).unwrap().expect("the saga");
    assert_eq!(shown.summary.state, herald_tracker::State::Completed);
}

#[test]
fn a_store_keyed_by_ce_id_keeps_working_after_its_migration_sqlite() {
    let (store, dir) = sqlite();
    old_store_keeps_working(&store);
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_keyed_by_ce_id_keeps_working_after_its_migration_postgres() {
    let Some(url) = herald_testkit::fresh_postgres("herald_tracker").await else { return };
    tokio::task::spawn_blocking(move || old_store_keeps_working(&herald_projector::store::open(&url).unwrap())).await.expect("the test thread");
}
