//! The outbox and the inbox end to end: a service writes orders and their events in one
//! PostgreSQL transaction, a relay sends them to Kafka, and a consumer applies them to a
//! per-customer total through the inbox, exactly once.
//!
//! ```sh
//! bash scripts/kafka start && bash scripts/postgres start
//! cargo run -p herald-outbox --example outbox                 # 100 orders
//! cargo run -p herald-outbox --example outbox -- --orders 1000 --postgres postgres://herald@127.0.0.1:55432/herald
//! ```
//!
//! What it shows: every committed order's event reaches the topic once with the id fixed
//! at commit (a rolled-back order's never does), and the consumer's totals equal the sum
//! of the orders even though it reads the topic twice (a second consumer group, as after
//! a crash before any offset commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald_bus::{admin, Consumer, Envelope, Event, HandlerError, KafkaConfig, Topic};
use herald_outbox::inbox::{pg_error, Inbox, InboxHandler};
use herald_outbox::relay::{Relay, RelayOptions};
use herald_outbox::{Outbox, OutboxTable};
use tokio_util::sync::CancellationToken;

/// An order was placed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderPlaced {
    order_id: String,
    customer_id: String,
    total_cents: i64,
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "example.outbox.OrderPlaced";
    const SCHEMA: &'static str = r#"{"type":"record","name":"OrderPlaced","namespace":"example.outbox","fields":[
        {"name":"order_id","type":"string"},{"name":"customer_id","type":"string"},{"name":"total_cents","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.customer_id
    }
}

herald_bus::family! {
    /// The example topic's events.
    #[derive(Debug, Clone)]
    pub enum OrderEvent {
        /// An order was placed.
        Placed(OrderPlaced),
    }
}

#[derive(Parser)]
struct Args {
    /// PostgreSQL URL.
    #[arg(long, default_value = "postgres://herald@127.0.0.1:55432/herald")]
    postgres: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Orders to place.
    #[arg(long, default_value_t = 100)]
    orders: i64,
}

/// Adds each order to its customer's total.
struct Totals {
    calls: Arc<AtomicU64>,
    table: String,
}

#[async_trait::async_trait]
impl InboxHandler<OrderEvent> for Totals {
    async fn handle(&self, tx: &tokio_postgres::Transaction<'_>, event: &Envelope<OrderEvent>) -> Result<(), HandlerError> {
        let OrderEvent::Placed(order) = &event.event;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let sql = format!(
            "INSERT INTO {t} VALUES ($1, $2) ON CONFLICT (customer_id) DO UPDATE SET cents = {t}.cents + $2",
            t = self.table
        );
        tx.execute(&sql, &[&order.customer_id, &order.total_cents]).await.map_err(pg_error)?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    let args = Args::parse();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let kafka = KafkaConfig::new(&args.bootstrap);
    let topic: Topic<OrderEvent> = Topic::named(format!("example.outbox.{run}"));
    admin::create_topics(&kafka, &[admin::TopicSpec::new(topic.name()).partitions(1)]).await?;
    let pg = herald_outbox::config(&args.postgres)?;
    let mut client = herald_outbox::connect(&pg).await.context("connecting to PostgreSQL (bash scripts/postgres start)")?;
    let table = OutboxTable::new(&format!("example_outbox_{run}"))?;
    table.ensure_schema(&mut client).await?;
    let orders = format!("example_orders_{run}");
    let totals = format!("example_totals_{run}");
    client
        .batch_execute(&format!(
            "CREATE TABLE {orders} (order_id text PRIMARY KEY, customer_id text NOT NULL, total_cents bigint NOT NULL);
             CREATE TABLE {totals} (customer_id text PRIMARY KEY, cents bigint NOT NULL);"
        ))
        .await?;

    // The service: each order and its event in one transaction; every tenth is rolled back.
    let outbox = Outbox::new(table.clone(), "/example/checkout");
    let mut expected = 0i64;
    for i in 0..args.orders {
        let order = OrderPlaced { order_id: format!("order-{i}"), customer_id: format!("customer-{}", i % 7), total_cents: 100 + i };
        let tx = client.transaction().await?;
        tx.execute(&format!("INSERT INTO {orders} VALUES ($1, $2, $3)"), &[&order.order_id, &order.customer_id, &order.total_cents]).await?;
        outbox.publish(&tx, &topic, &order).await?;
        if i % 10 == 9 {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
            expected += order.total_cents;
        }
    }
    println!("placed {} orders ({} rolled back); the outbox holds their events", args.orders, args.orders / 10);

    // The relay.
    let stop = CancellationToken::new();
    let relay = Relay::new(pg.clone(), table.clone(), &kafka, RelayOptions::default())?;
    let relay_health = relay.health();
    let relay_task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));

    // The consumer with the inbox, twice (the second as after a crash without commits).
    let inbox = Inbox::new(pg.clone(), &format!("example_inbox_{run}"), "totals", 4)?;
    inbox.ensure_schema().await?;
    let calls = Arc::new(AtomicU64::new(0));
    let mut committed = args.orders - args.orders / 10;
    for group in ["first", "again"] {
        if group == "again" {
            // One more order: the second group is through once it applied this one (one
            // partition: everything before it was delivered again, and skipped).
            let order = OrderPlaced { order_id: "order-last".into(), customer_id: "customer-0".into(), total_cents: 1 };
            let tx = client.transaction().await?;
            outbox.publish(&tx, &topic, &order).await?;
            tx.commit().await?;
            expected += 1;
            committed += 1;
        }
        let consumer = Consumer::builder(kafka.clone(), format!("example.outbox.{run}.{group}"))
            .subscribe(&topic, inbox.handler(Totals { calls: calls.clone(), table: totals.clone() }))
            .build()
            .await?;
        let stop_consumer = CancellationToken::new();
        let task = tokio::spawn(consumer.run(stop_consumer.clone().cancelled_owned()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let sum: i64 = client.query_one(&format!("SELECT coalesce(sum(cents), 0)::bigint FROM {totals}"), &[]).await?.get(0);
            if sum == expected {
                break;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out: totals {sum}, expected {expected}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_consumer.cancel();
        task.await??;
        println!("consumer group {group}: read the whole topic; the handler has run {} times for {committed} events", calls.load(Ordering::SeqCst));
    }
    anyhow::ensure!(calls.load(Ordering::SeqCst) == committed as u64, "the handler ran more often than there are events");
    stop.cancel();
    relay_task.await??;
    let sum: i64 = client.query_one(&format!("SELECT coalesce(sum(cents), 0)::bigint FROM {totals}"), &[]).await?.get(0);
    anyhow::ensure!(sum == expected, "totals {sum} != orders {expected}");
    println!("relayed {} events; totals equal the committed orders ({sum} cents), each applied once", relay_health.relayed());
    client
        .batch_execute(&format!("DROP TABLE {orders}, {totals}, example_inbox_{run}, {t}, {t}_buckets, {t}_settings", t = table.name()))
        .await?;
    Ok(())
}
