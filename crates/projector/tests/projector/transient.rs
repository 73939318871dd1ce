//! In-process, on PostgreSQL: a store error that says the server failed, not the
//! projection's statement (here `statement_timeout`'s query_canceled, 57014), is retried
//! until the event applies; it is never dead-lettered.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_bus::{Envelope, RetryPolicy, Topic};
use herald_projector::{store, Projection, ProjectionError, Projector, Tx, Value};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Records each order; the order `slow` runs into the statement timeout on its first
/// attempt only.
#[derive(Clone, Default)]
struct SlowOnce {
    slow_attempts: Arc<AtomicU32>,
}

impl Projection<OrderEvent> for SlowOnce {
    const NAME: &'static str = "slow_once";

    fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError> {
        let t = tx.table("seen");
        tx.batch(&format!("CREATE TABLE IF NOT EXISTS {t} (order_id TEXT PRIMARY KEY, n BIGINT NOT NULL)"))?;
        Ok(())
    }

    fn apply(&self, tx: &mut dyn Tx, event: &Envelope<OrderEvent>) -> Result<(), ProjectionError> {
        let OrderEvent::Placed(p) = &event.event else { return Ok(()) };
        if p.order_id == "slow" && self.slow_attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            tx.batch("SET LOCAL statement_timeout = '50ms'")?;
            tx.execute("SELECT pg_sleep(30)", &[])?;
        }
        let t = tx.table("seen");
        tx.execute(&format!("INSERT INTO {t} (order_id, n) VALUES ($1, 1) ON CONFLICT (order_id) DO UPDATE SET n = {t}.n + 1"), &[Value::Text(&p.order_id)])?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_timeout_is_retried_not_dead_lettered_postgres() {
    let Some(store_url) = fresh_store(Backend::Postgres).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.timeout", 1).await);
    let publisher = publisher(&config);
    for id in ["a", "slow", "b"] {
        publisher.publish(&orders, &OrderPlaced::example(id, "c", 1)).await.expect("published");
    }
    let projection = SlowOnce::default();
    let store = store::open(&store_url).expect("store");
    let projector = Projector::builder(config.clone(), unique("g.timeout"), &orders, projection.clone(), store.clone())
        .retry(RetryPolicy { max_attempts: 1, initial: Duration::from_millis(10), max: Duration::from_millis(50), ..Default::default() })
        .build()
        .await
        .expect("builds");
    let status = projector.status();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone().cancelled_owned()));
    wait_until(DEADLINE, "all three records passed", || async { status.get().partitions.first().and_then(|p| p.position) == Some(3) }).await;
    stop.cancel();
    tokio::time::timeout(DEADLINE, running).await.expect("stops").expect("task").expect("runs");

    assert_eq!(projection.slow_attempts.load(Ordering::SeqCst), 2, "timed out once, then applied");
    assert_eq!(stored_dead_letters(&store_url).await, Vec::new(), "nothing dead-lettered");
    let seen = tokio::task::spawn_blocking(move || {
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.read().expect("read");
        let rows = tx.query("SELECT order_id, n FROM seen__v1 ORDER BY order_id", &[]).expect("query");
        rows.iter().map(|r| (r.text(0).expect("id").to_owned(), r.int(1).expect("n"))).collect::<Vec<_>>()
    })
    .await
    .expect("read");
    let expected: Vec<(String, i64)> = ["a", "b", "slow"].iter().map(|s| ((*s).to_owned(), 1)).collect();
    assert_eq!(seen, expected, "each applied exactly once");
}
