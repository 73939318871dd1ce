//! [`Script`]: publishes sagas of the shop by hand, each event caused by the one before
//! it (same correlation id, causation id = the previous event's id): for demos, examples
//! and tests of the tracker, without running the participants.

use chrono::{DateTime, Utc};
use herald_bus::event::Member;
use herald_bus::{Event, EventFamily, Metadata, PublishError, Published, Publisher, Topic};
use herald_shop::inventory::{InventoryEvent, StockLine, StockRejected, StockReleased, StockReserved, INVENTORY};
use herald_shop::payments::{PaymentCharged, PaymentDeclined, PaymentEvent, PaymentRefunded, PAYMENTS};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderEvent, OrderPlaced, ORDERS};

/// One event of a shop saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `OrderPlaced` (starts the saga).
    Placed,
    /// `StockReserved`.
    Reserved,
    /// `StockRejected`.
    Rejected,
    /// `StockReleased`.
    Released,
    /// `PaymentCharged`.
    Charged,
    /// `PaymentDeclined`.
    Declined,
    /// `PaymentRefunded`.
    Refunded,
    /// `OrderConfirmed`.
    Confirmed,
    /// `OrderCancelled`.
    Cancelled,
}

/// Publishes shop sagas on `PREFIX<topic>`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_tracker::script::{Script, Step};
/// let publisher = herald_bus::Publisher::new(&herald_bus::KafkaConfig::new("127.0.0.1:9092"), herald_bus::PublisherOptions::new("/demo"))?;
/// let script = Script::new(&publisher, "");
/// let sent = script.saga("order-1", &[Step::Placed, Step::Reserved, Step::Charged, Step::Confirmed], chrono::Utc::now(), chrono::Duration::milliseconds(10)).await?;
/// println!("saga {}", sent[0].id); // the first event's id is the saga's correlation id
/// # Ok(()) }
/// ```
pub struct Script<'a> {
    publisher: &'a Publisher,
    orders: Topic<OrderEvent>,
    inventory: Topic<InventoryEvent>,
    payments: Topic<PaymentEvent>,
}

impl<'a> Script<'a> {
    /// Publishes through `publisher` on the shop's topics, each name prefixed by `prefix`.
    pub fn new(publisher: &'a Publisher, prefix: &str) -> Self {
        Script {
            publisher,
            orders: Topic::named(format!("{prefix}{}", ORDERS.name())),
            inventory: Topic::named(format!("{prefix}{}", INVENTORY.name())),
            payments: Topic::named(format!("{prefix}{}", PAYMENTS.name())),
        }
    }

    /// Publishes `steps` for order `order_id` as one saga, the first at `start`, each next
    /// one `every` later (their `ce_time`), and returns where each went. The saga's id (its
    /// correlation id) is the first event's id.
    pub async fn saga(&self, order_id: &str, steps: &[Step], start: DateTime<Utc>, every: chrono::Duration) -> Result<Vec<Published>, PublishError> {
        let (customer, cents, payment) = ("customer-1", 2500, format!("payment-{order_id}"));
        let lines = || vec![StockLine { sku: "SKU-1".into(), quantity: 1 }];
        let mut previous: Option<Metadata> = None;
        let mut sent = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let at = start + every * i32::try_from(i).unwrap_or(i32::MAX);
            let o = order_id.to_owned();
            let published = match step {
                Step::Placed => self.one(&self.orders, &OrderPlaced::example(order_id, customer, cents), &previous, at).await?,
                Step::Confirmed => self.one(&self.orders, &OrderConfirmed::example(order_id, &payment), &previous, at).await?,
                Step::Cancelled => self.one(&self.orders, &OrderCancelled::example(order_id, "payment-declined", Some("system")), &previous, at).await?,
                Step::Reserved => self.one(&self.inventory, &StockReserved { order_id: o, customer_id: customer.into(), total_cents: cents, lines: lines() }, &previous, at).await?,
                Step::Rejected => self.one(&self.inventory, &StockRejected { order_id: o, sku: "SKU-1".into(), requested: 1, available: 0 }, &previous, at).await?,
                Step::Released => self.one(&self.inventory, &StockReleased { order_id: o, lines: lines() }, &previous, at).await?,
                Step::Charged => self.one(&self.payments, &PaymentCharged { order_id: o, customer_id: customer.into(), payment_id: payment.clone(), amount_cents: cents }, &previous, at).await?,
                Step::Declined => self.one(&self.payments, &PaymentDeclined { order_id: o, customer_id: customer.into(), reason: "insufficient-credit".into() }, &previous, at).await?,
                Step::Refunded => self.one(&self.payments, &PaymentRefunded { order_id: o, customer_id: customer.into(), payment_id: payment.clone(), amount_cents: cents }, &previous, at).await?,
            };
            previous = Some(published.0);
            sent.push(published.1);
        }
        Ok(sent)
    }

    async fn one<F: EventFamily + Member<E>, E: Event>(&self, topic: &Topic<F>, event: &E, previous: &Option<Metadata>, at: DateTime<Utc>) -> Result<(Metadata, Published), PublishError> {
        let mut meta = self.publisher.metadata_for(event);
        if let Some(cause) = previous {
            meta = meta.caused_by(cause);
        }
        meta.time = at;
        let published = self.publisher.publish_with(topic, event, meta.clone()).await?;
        Ok((meta, published))
    }
}
