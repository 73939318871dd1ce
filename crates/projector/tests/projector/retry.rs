//! In-process: a projection that fails transiently is retried with backoff until it
//! succeeds (nothing dead-lettered); one that keeps failing is dead-lettered after its
//! attempts, and shutdown on a future is orderly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_bus::{Envelope, RetryPolicy, Topic};
use herald_projector::{store, Projection, ProjectionError, Projector, Tx, Value};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Counts orders; fails `flaky` orders transiently `failures` times each, and `broken`
/// orders always.
#[derive(Clone)]
struct Flaky {
    failures: u32,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Projection<OrderEvent> for Flaky {
    const NAME: &'static str = "flaky";

    fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError> {
        let t = tx.table("seen");
        tx.batch(&format!("CREATE TABLE IF NOT EXISTS {t} (order_id TEXT PRIMARY KEY, n BIGINT NOT NULL)"))?;
        Ok(())
    }

    fn apply(&self, tx: &mut dyn Tx, event: &Envelope<OrderEvent>) -> Result<(), ProjectionError> {
        let OrderEvent::Placed(p) = &event.event else { return Ok(()) };
        let attempt = {
            let mut attempts = self.attempts.lock().expect("lock");
            let n = attempts.entry(p.order_id.clone()).or_default();
            *n += 1;
            *n
        };
        if p.order_id.starts_with("flaky") && attempt <= self.failures {
            return Err(ProjectionError::Transient(format!("attempt {attempt}: dependency unavailable")));
        }
        if p.order_id.starts_with("broken") {
            return Err(ProjectionError::Transient("always unavailable".into()));
        }
        let t = tx.table("seen");
        tx.execute(&format!("INSERT INTO {t} (order_id, n) VALUES ($1, 1) ON CONFLICT (order_id) DO UPDATE SET n = {t}.n + 1"), &[Value::Text(&p.order_id)])?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_and_exhausted_ones_dead_lettered() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.retry", 1).await);
    let publisher = publisher(&config);
    for id in ["a", "flaky-1", "b", "broken-1", "c"] {
        publisher.publish(&orders, &OrderPlaced::example(id, "c", 1)).await.expect("published");
    }
    let projection = Flaky { failures: 2, attempts: Arc::default() };
    let store = store::open(&store_url).expect("store");
    let projector = Projector::builder(config.clone(), unique("g.retry"), &orders, projection.clone(), store.clone())
        .retry(RetryPolicy { max_attempts: 4, initial: Duration::from_millis(10), max: Duration::from_millis(50), ..Default::default() })
        .build()
        .await
        .expect("builds");
    let status = projector.status();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone().cancelled_owned()));
    wait_until(DEADLINE, "all five records passed", || async { status.get().partitions.first().and_then(|p| p.position) == Some(5) }).await;
    stop.cancel();
    let stopped = tokio::time::timeout(DEADLINE, running).await.expect("stops").expect("task").expect("runs");
    assert_eq!(stopped, herald_projector::Stopped::Shutdown);

    let attempts = projection.attempts.lock().expect("lock").clone();
    assert_eq!(attempts["flaky-1"], 3, "two transient failures, then success");
    assert_eq!(attempts["broken-1"], 4, "max_attempts, then dead-lettered");
    let seen = tokio::task::spawn_blocking(move || {
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.read().expect("read");
        let rows = tx.query("SELECT order_id, n FROM seen__v1 ORDER BY order_id", &[]).expect("query");
        rows.iter().map(|r| (r.text(0).expect("id").to_owned(), r.int(1).expect("n"))).collect::<Vec<_>>()
    })
    .await
    .expect("read");
    let expected: Vec<(String, i64)> = ["a", "b", "c", "flaky-1"].iter().map(|s| ((*s).to_owned(), 1)).collect();
    assert_eq!(seen, expected, "each applied exactly once, the broken one not at all");
    let dead = stored_dead_letters(&store_url).await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].1, dead[0].2.as_str()), (3, "handler"));
    assert!(dead[0].3.contains("always unavailable"), "{dead:?}");
}
