//! `herald demo`: the main job of Herald on embedded defaults.
//!
//! Creates the topic (3 partitions) if missing, publishes three orders of the reference
//! domain with the typed API (one confirmed, one cancelled), then consumes them back with
//! the typed consumer in a fresh group and prints each with its metadata. Succeeds only
//! if every published event came back within [`DEADLINE`].

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use herald_bus::admin::{self, Created, TopicSpec};
use herald_bus::event::Member;
use herald_bus::timestamp::TimestampMillis;
use herald_bus::{Consumer, Envelope, Event, HandlerError, Publisher, Topic};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderEvent, OrderPlaced, ORDERS};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::context::Context;
use crate::exit::{invalid, outln};

/// How long the demo waits for its events to come back.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Arguments of `herald demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topic to use.
    #[arg(long, default_value = "shop.orders")]
    pub topic: String,
}

/// Runs the demo.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    if let Err(reason) = herald_bus::topic::validate_name(&args.topic) {
        invalid!("{reason}");
    }
    let topic: Topic<OrderEvent> = if args.topic == ORDERS.name() { ORDERS } else { Topic::named(&args.topic) };
    let created = admin::create_topics(&ctx.kafka, &[TopicSpec::new(topic.name()).partitions(3)])
        .await
        .with_context(|| format!("cannot create {}", topic.name()))?;
    match created.first() {
        Some(Created::New) => outln!("topic {}: created, 3 partitions", topic.name()),
        _ => outln!("topic {}: exists", topic.name()),
    }

    let publisher = ctx.publisher("/herald/demo")?;
    let run = Uuid::new_v4().simple().to_string();
    let order = |n: u32| format!("order-{}-{n}", &run[..6]);
    let mut expected = HashSet::new();
    let published = async {
        for (n, cents) in [(1, 2500), (2, 990), (3, 12000)] {
            let placed = OrderPlaced { placed_at: Some(TimestampMillis::now()), ..OrderPlaced::example(&order(n), &format!("customer-{n}"), cents) };
            expected.insert(publish(&publisher, &topic, &placed).await?);
        }
        let confirmed = OrderConfirmed { confirmed_at: Some(TimestampMillis::now()), ..OrderConfirmed::example(&order(1), &format!("payment-{}", &run[..6])) };
        expected.insert(publish(&publisher, &topic, &confirmed).await?);
        let cancelled = OrderCancelled { cancelled_at: Some(TimestampMillis::now()), ..OrderCancelled::example(&order(2), "changed my mind", Some("customer-2")) };
        expected.insert(publish(&publisher, &topic, &cancelled).await?);
        anyhow::Ok(())
    }
    .await;
    publisher.flush(Duration::from_secs(10)).await.context("flushing the producer")?;
    published?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope<OrderEvent>>();
    let group = format!("herald-demo-{run}");
    let consumer = Consumer::builder(ctx.kafka.clone(), &group)
        .subscribe(&topic, move |event: Envelope<OrderEvent>| {
            let tx = tx.clone();
            async move {
                // The receiver is gone only once the demo stopped waiting.
                let _ = tx.send(event);
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .await
        .context("cannot start the consumer")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));

    let total = expected.len();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !expected.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => {
                if expected.remove(&event.meta.id) {
                    print_consumed(&event)?;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = stop.send(());
    running.await.context("consumer task")?.context("consumer")?;
    if !expected.is_empty() {
        anyhow::bail!("only {} of {total} events came back within {DEADLINE:?}", total - expected.len());
    }
    outln!("all {total} events came back (group {group})");
    Ok(())
}

/// Publishes one event and prints where it landed; returns its id.
async fn publish<E: Event>(publisher: &Publisher, topic: &Topic<OrderEvent>, event: &E) -> anyhow::Result<Uuid>
where
    OrderEvent: Member<E>,
{
    let done = publisher.publish(topic, event).await.with_context(|| format!("publishing {}", E::TYPE))?;
    outln!("published {:<26} {:<20} {}/{}  id={}", E::TYPE, event.aggregate_id(), done.partition, done.offset, done.id);
    Ok(done.id)
}

fn print_consumed(event: &Envelope<OrderEvent>) -> anyhow::Result<()> {
    let what = match &event.event {
        OrderEvent::Placed(p) => format!("{} {} cents, {} line(s), by {}", p.currency, p.total_cents, p.lines.len(), p.customer_id),
        OrderEvent::Confirmed(c) => format!("paid by {}", c.payment_id),
        OrderEvent::Cancelled(c) => format!("{:?} by {}", c.reason, c.cancelled_by.as_deref().unwrap_or("unknown")),
    };
    outln!(
        "consumed  {:<26} {:<20} {}/{}  source={} time={}  {what}",
        event.meta.event_type,
        event.meta.subject,
        event.position.partition,
        event.position.offset,
        event.meta.source,
        event.meta.time.format("%H:%M:%S%.3f"),
    );
    Ok(())
}
