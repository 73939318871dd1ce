//! In-process: a projection that panics on an event fails that event permanently (it is
//! dead-lettered with the panic's message) and the projector goes on; a store thread that
//! dies anyway (a panic in the store itself) ends `run` with an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use herald_bus::{Envelope, Topic};
use herald_projector::store::{Connection, StoreError, Transaction};
use herald_projector::{store, Projection, ProjectionError, Projector, ProjectorError, Store, Tx, Value};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Records each order; panics on the order `boom`.
struct Panicky;

impl Projection<OrderEvent> for Panicky {
    const NAME: &'static str = "panicky";

    fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError> {
        let t = tx.table("seen");
        tx.batch(&format!("CREATE TABLE IF NOT EXISTS {t} (order_id TEXT PRIMARY KEY)"))?;
        Ok(())
    }

    fn apply(&self, tx: &mut dyn Tx, event: &Envelope<OrderEvent>) -> Result<(), ProjectionError> {
        let OrderEvent::Placed(p) = &event.event else { return Ok(()) };
        let t = tx.table("seen");
        // Written before the panic: the rollback must undo it.
        tx.execute(&format!("INSERT INTO {t} (order_id) VALUES ($1)"), &[Value::Text(&p.order_id)])?;
        assert_ne!(p.order_id, "boom", "the projection hit a bug");
        Ok(())
    }
}

async fn seen(store: Arc<dyn Store>) -> Vec<String> {
    tokio::task::spawn_blocking(move || {
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.read().expect("read");
        let rows = tx.query("SELECT order_id FROM seen__v1 ORDER BY order_id", &[]).expect("query");
        rows.iter().map(|r| r.text(0).expect("id").to_owned()).collect()
    })
    .await
    .expect("read")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_projection_dead_letters_the_event_and_keeps_running() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.panic", 2).await);
    let publisher = publisher(&config);
    for id in ["a", "boom", "b", "c", "d"] {
        publisher.publish(&orders, &OrderPlaced::example(id, "c", 1)).await.expect("published");
    }
    let store = store::open(&store_url).expect("store");
    let projector = Projector::builder(config.clone(), unique("g.panic"), &orders, Panicky, store.clone()).build().await.expect("builds");
    let status = projector.status();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone().cancelled_owned()));
    let passed = || status.get().partitions.iter().filter_map(|p| p.position).sum::<i64>();
    wait_until(DEADLINE, "all five records passed", || async { passed() == 5 }).await;

    let dead = stored_dead_letters(&store_url).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].2, "handler", "{dead:?}");
    assert!(dead[0].3.contains("panicked") && dead[0].3.contains("the projection hit a bug"), "{dead:?}");
    assert_eq!(seen(store.clone()).await, ["a", "b", "c", "d"], "every other event applied, the panicking one rolled back");
    // Still running, and still applying.
    publisher.publish(&orders, &OrderPlaced::example("e", "c", 1)).await.expect("published");
    wait_until(DEADLINE, "a later record applied", || async { passed() == 6 }).await;
    assert!(status.get().running && !running.is_finished(), "{:?}", status.get());
    stop.cancel();
    let stopped = tokio::time::timeout(DEADLINE, running).await.expect("stops").expect("task").expect("runs");
    assert_eq!(stopped, herald_projector::Stopped::Shutdown);
}

/// A store whose write transactions panic once armed (a bug in a store driver, outside
/// the projection's code).
struct Breaking {
    inner: Arc<dyn Store>,
    armed: Arc<AtomicBool>,
}

struct BreakingConnection {
    inner: Box<dyn Connection>,
    armed: Arc<AtomicBool>,
}

impl Store for Breaking {
    fn connect(&self) -> Result<Box<dyn Connection>, StoreError> {
        Ok(Box::new(BreakingConnection { inner: self.inner.connect()?, armed: self.armed.clone() }))
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

impl Connection for BreakingConnection {
    fn begin(&mut self, version: u32) -> Result<Box<dyn Transaction + '_>, StoreError> {
        assert!(!self.armed.load(Ordering::SeqCst), "the store driver broke");
        self.inner.begin(version)
    }

    fn read(&mut self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        self.inner.read()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_thread_that_dies_ends_run_with_an_error() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.storedies", 1).await);
    let publisher = publisher(&config);
    publisher.publish(&orders, &OrderPlaced::example("a", "c", 1)).await.expect("published");
    let armed = Arc::new(AtomicBool::new(false));
    let store: Arc<dyn Store> = Arc::new(Breaking { inner: store::open(&store_url).expect("store"), armed: armed.clone() });
    let projector = Projector::builder(config.clone(), unique("g.storedies"), &orders, Panicky, store).build().await.expect("builds");
    let status = projector.status();
    let running = tokio::spawn(projector.run(std::future::pending()));
    wait_until(DEADLINE, "the first record applied", || async { status.get().partitions.first().and_then(|p| p.position) == Some(1) }).await;
    armed.store(true, Ordering::SeqCst);
    publisher.publish(&orders, &OrderPlaced::example("b", "c", 1)).await.expect("published");
    let ended = tokio::time::timeout(DEADLINE, running).await.expect("run returns instead of stalling").expect("task");
    match ended {
        Err(e @ ProjectorError::StoreThread(_)) => assert!(e.to_string().contains("the store driver broke"), "{e}"),
        other => panic!("expected the store thread's failure, got {other:?}"),
    }
    assert!(!status.get().running, "no longer reported running");
}
