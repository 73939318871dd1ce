//! [`OrderStatus`]: the projection, and [`projectors`], its three projectors on one store.
//!
//! Table (logical name, served as a database view over the live version):
//! `order_status(order_id, customer_id, total_cents, currency, status, reason,
//! cancelled_by, detail, stock, payment, charged_cents, refunded_cents, payment_id,
//! last_step, last_step_ms, last_step_rank, placed_ms, decided_ms, events, updated_ms)`.
//!
//! Events of one order come from three topics read by separate projectors, so they arrive
//! in any order. Each column is written so the row ends the same whatever that order:
//! - `status` is `placed` until a terminal event; the first terminal event applied wins
//!   (the saga emits exactly one; the tracker checks that) and sets `reason`,
//!   `cancelled_by` and `decided_ms` (its event time).
//! - `stock` (`reserved`, `rejected`, `released`) and `payment` (`charged`, `declined`,
//!   `refunded`) never go back: a release or a refund stays even if the reservation or the
//!   charge is applied after it.
//! - `last_step` is the event with the latest event time (ties broken by the saga's order
//!   of steps), whichever projector applied it last.
//! - Order fields (`customer_id`, `total_cents`, `currency`) come from `OrderPlaced`, or
//!   from `StockReserved` until it is seen.
//! - An event is applied once by its `ce_id` (table `order_status_applied`): a copy of it
//!   at another offset (a producer's retry without idempotence, a dead letter replayed)
//!   changes nothing, `events` included.

use std::sync::Arc;

use herald_bus::{Envelope, KafkaConfig, Topic};
use herald_projector::{Projection, ProjectionError, Projector, ProjectorError, Store, Tx, Value};

use super::event::{ShopEvent, TOPICS};

/// The projection's name (its positions and view versions are stored under it).
pub const PROJECTION: &str = "order_status";

/// The order-status projection (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderStatus;

/// Builds the view's three projectors, one per public topic (`PREFIX<topic>`), in consumer
/// groups `GROUP.<topic>`, all on `store`, their consumers with librdkafka `properties`
/// (say `session.timeout.ms`). Built one after another: they migrate the same store.
///
/// # Errors
/// A projector that cannot start (store, broker).
pub async fn projectors(config: &KafkaConfig, group: &str, topic_prefix: &str, store: Arc<dyn Store>, properties: &[(String, String)]) -> Result<Vec<Projector<ShopEvent, OrderStatus>>, ProjectorError> {
    let mut built = Vec::with_capacity(TOPICS.len());
    for topic in TOPICS {
        let named: Topic<ShopEvent> = Topic::named(format!("{topic_prefix}{topic}"));
        let builder = Projector::builder(config.clone(), format!("{group}.{topic}"), &named, OrderStatus, store.clone());
        let builder = properties.iter().fold(builder, |b, (k, v)| b.kafka_property(k, v));
        built.push(builder.build().await?);
    }
    Ok(built)
}

/// The short type name (`OrderPlaced`) of an event, and its rank in the saga's order of
/// steps (placed, stock, payment, outcome, compensation): the tie-break of `last_step`.
fn step(event: &ShopEvent) -> (&'static str, i64) {
    match event {
        ShopEvent::Placed(_) => ("OrderPlaced", 0),
        ShopEvent::StockReserved(_) => ("StockReserved", 1),
        ShopEvent::StockRejected(_) => ("StockRejected", 1),
        ShopEvent::Charged(_) => ("PaymentCharged", 2),
        ShopEvent::Declined(_) => ("PaymentDeclined", 2),
        ShopEvent::Confirmed(_) => ("OrderConfirmed", 3),
        ShopEvent::Cancelled(_) => ("OrderCancelled", 3),
        ShopEvent::StockReleased(_) => ("StockReleased", 4),
        ShopEvent::Refunded(_) => ("PaymentRefunded", 4),
    }
}

impl Projection<ShopEvent> for OrderStatus {
    const NAME: &'static str = PROJECTION;

    fn views(&self) -> &'static [&'static str] {
        &["order_status"]
    }

    fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError> {
        let t = tx.table("order_status");
        tx.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (order_id TEXT PRIMARY KEY, customer_id TEXT, total_cents BIGINT, currency TEXT, \
             status TEXT NOT NULL, reason TEXT, cancelled_by TEXT, detail TEXT, stock TEXT, payment TEXT, charged_cents BIGINT, \
             refunded_cents BIGINT, payment_id TEXT, last_step TEXT NOT NULL, last_step_ms BIGINT NOT NULL, last_step_rank BIGINT NOT NULL, \
             placed_ms BIGINT, decided_ms BIGINT, events BIGINT NOT NULL, updated_ms BIGINT NOT NULL);
             CREATE INDEX IF NOT EXISTS {t}_updated ON {t} (updated_ms);
             CREATE TABLE IF NOT EXISTS {applied} (event_id TEXT PRIMARY KEY)",
            applied = tx.table("order_status_applied"),
        ))?;
        Ok(())
    }

    fn apply(&self, tx: &mut dyn Tx, envelope: &Envelope<ShopEvent>) -> Result<(), ProjectionError> {
        // Once per event id: a copy of an event applied already changes nothing.
        let applied = tx.table("order_status_applied");
        if tx.execute(&format!("INSERT INTO {applied} (event_id) VALUES ($1) ON CONFLICT DO NOTHING"), &[Value::Text(&envelope.meta.ce_id())])? == 0 {
            return Ok(());
        }
        let t = tx.table("order_status");
        let event = &envelope.event;
        let order_id = herald_bus::EventFamily::aggregate_id(event);
        let at = envelope.meta.time.timestamp_millis();
        let (name, rank) = step(event);
        // The row, created by whichever event comes first; the last step by event time.
        tx.execute(
            &format!(
                "INSERT INTO {t} (order_id, status, last_step, last_step_ms, last_step_rank, events, updated_ms) VALUES ($1, 'placed', $2, $3, $4, 1, $3) \
                 ON CONFLICT (order_id) DO UPDATE SET events = {t}.events + 1, \
                 updated_ms = CASE WHEN excluded.updated_ms > {t}.updated_ms THEN excluded.updated_ms ELSE {t}.updated_ms END, \
                 last_step = CASE WHEN {later} THEN excluded.last_step ELSE {t}.last_step END, \
                 last_step_rank = CASE WHEN {later} THEN excluded.last_step_rank ELSE {t}.last_step_rank END, \
                 last_step_ms = CASE WHEN {later} THEN excluded.last_step_ms ELSE {t}.last_step_ms END",
                later = format_args!("(excluded.last_step_ms > {t}.last_step_ms OR (excluded.last_step_ms = {t}.last_step_ms AND excluded.last_step_rank >= {t}.last_step_rank))"),
            ),
            &[Value::Text(order_id), Value::Text(name), Value::Int(at), Value::Int(rank)],
        )?;
        let id = Value::Text(order_id);
        match event {
            ShopEvent::Placed(p) => {
                tx.execute(
                    &format!("UPDATE {t} SET customer_id = $2, total_cents = $3, currency = $4, placed_ms = $5 WHERE order_id = $1"),
                    &[id, Value::Text(&p.customer_id), Value::Int(p.total_cents), Value::Text(&p.currency), Value::Int(at)],
                )?;
            }
            ShopEvent::Confirmed(c) => {
                tx.execute(
                    &format!("UPDATE {t} SET status = 'confirmed', decided_ms = $2, payment_id = COALESCE(payment_id, $3) WHERE order_id = $1 AND status = 'placed'"),
                    &[id, Value::Int(at), Value::Text(&c.payment_id)],
                )?;
            }
            ShopEvent::Cancelled(c) => {
                tx.execute(
                    &format!("UPDATE {t} SET status = 'cancelled', decided_ms = $2, reason = $3, cancelled_by = $4 WHERE order_id = $1 AND status = 'placed'"),
                    &[id, Value::Int(at), Value::Text(&c.reason), c.cancelled_by.as_deref().into()],
                )?;
            }
            ShopEvent::StockReserved(r) => {
                tx.execute(
                    &format!(
                        "UPDATE {t} SET stock = CASE WHEN stock = 'released' THEN stock ELSE 'reserved' END, \
                         customer_id = COALESCE(customer_id, $2), total_cents = COALESCE(total_cents, $3) WHERE order_id = $1"
                    ),
                    &[id, Value::Text(&r.customer_id), Value::Int(r.total_cents)],
                )?;
            }
            ShopEvent::StockRejected(r) => {
                let detail = format!("{}: {} asked, {} available", r.sku, r.requested, r.available);
                tx.execute(&format!("UPDATE {t} SET stock = 'rejected', detail = COALESCE(detail, $2) WHERE order_id = $1"), &[id, Value::Text(&detail)])?;
            }
            ShopEvent::StockReleased(_) => {
                tx.execute(&format!("UPDATE {t} SET stock = 'released' WHERE order_id = $1"), &[id])?;
            }
            ShopEvent::Charged(c) => {
                tx.execute(
                    &format!("UPDATE {t} SET payment = CASE WHEN payment = 'refunded' THEN payment ELSE 'charged' END, charged_cents = $2, payment_id = $3 WHERE order_id = $1"),
                    &[id, Value::Int(c.amount_cents), Value::Text(&c.payment_id)],
                )?;
            }
            ShopEvent::Declined(d) => {
                tx.execute(&format!("UPDATE {t} SET payment = 'declined', detail = COALESCE(detail, $2) WHERE order_id = $1"), &[id, Value::Text(&d.reason)])?;
            }
            ShopEvent::Refunded(r) => {
                tx.execute(&format!("UPDATE {t} SET payment = 'refunded', refunded_cents = $2 WHERE order_id = $1"), &[id, Value::Int(r.amount_cents)])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use herald_bus::{Metadata, Position};

    use super::*;
    use crate::inventory::{StockLine, StockReleased, StockReserved};
    use crate::order_status::query;
    use crate::orders::{OrderCancelled, OrderPlaced};
    use crate::payments::{PaymentCharged, PaymentRefunded};

    fn envelope(event: ShopEvent, at_ms: i64) -> Envelope<ShopEvent> {
        let mut meta = Metadata::new(herald_bus::EventFamily::type_name(&event), "/test", herald_bus::EventFamily::aggregate_id(&event));
        meta.time = chrono::DateTime::from_timestamp_millis(at_ms).expect("time");
        Envelope { event, meta, position: Position { topic: "t".into(), partition: 0, offset: at_ms } }
    }

    /// A timed-out order's events, in saga order, with their event times.
    fn timed_out() -> Vec<Envelope<ShopEvent>> {
        let lines = vec![StockLine { sku: "SKU-1".into(), quantity: 2 }];
        vec![
            envelope(ShopEvent::Placed(OrderPlaced::example("o-1", "c-1", 2500)), 1_000),
            envelope(ShopEvent::StockReserved(StockReserved { order_id: "o-1".into(), customer_id: "c-1".into(), total_cents: 2500, lines: lines.clone() }), 1_100),
            envelope(ShopEvent::Cancelled(OrderCancelled::example("o-1", "timeout", Some("system"))), 9_000),
            envelope(ShopEvent::StockReleased(StockReleased { order_id: "o-1".into(), lines }), 9_100),
            envelope(ShopEvent::Charged(PaymentCharged { order_id: "o-1".into(), customer_id: "c-1".into(), payment_id: "pay-o-1".into(), amount_cents: 2500 }), 12_000),
            envelope(ShopEvent::Refunded(PaymentRefunded { order_id: "o-1".into(), customer_id: "c-1".into(), payment_id: "pay-o-1".into(), amount_cents: 2500 }), 12_100),
        ]
    }

    fn fold(events: &[&Envelope<ShopEvent>]) -> query::OrderStatusRow {
        let dir = std::env::temp_dir().join(format!("order-status-{}", uuid_like()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = herald_projector::store::open(&format!("sqlite:{}", dir.join("v.db").display())).expect("store");
        let mut conn = store.connect().expect("connect");
        let mut tx = conn.begin(1).expect("begin");
        herald_projector::position::migrate(tx.as_tx()).expect("bookkeeping");
        OrderStatus.migrate(tx.as_tx()).expect("migrate");
        let table = herald_projector::store::versioned("order_status", 1);
        tx.batch(&format!("CREATE VIEW order_status AS SELECT * FROM {table}")).expect("view");
        for e in events {
            OrderStatus.apply(tx.as_tx(), e).expect("apply");
        }
        tx.commit().expect("commit");
        let row = query::get(&mut *conn, "o-1").expect("read").expect("the order");
        let _ = std::fs::remove_dir_all(&dir);
        row
    }

    fn uuid_like() -> String {
        format!("{}-{:?}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0))
    }

    #[test]
    fn a_timed_out_order_ends_cancelled_released_and_refunded_in_any_order() {
        let events = timed_out();
        let in_order: Vec<&Envelope<ShopEvent>> = events.iter().collect();
        let expected = fold(&in_order);
        assert_eq!(expected.status, "cancelled");
        assert_eq!(expected.reason.as_deref(), Some("timeout"));
        assert_eq!(expected.stock.as_deref(), Some("released"));
        assert_eq!(expected.payment.as_deref(), Some("refunded"));
        assert_eq!((expected.total_cents, expected.charged_cents, expected.refunded_cents), (Some(2500), Some(2500), Some(2500)));
        assert_eq!(expected.last_step, "PaymentRefunded");
        assert_eq!((expected.placed_ms, expected.decided_ms, expected.events), (Some(1_000), Some(9_000), 6));
        // Every other order of arrival (the topics are read by separate projectors) ends the same.
        let mut reversed = in_order.clone();
        reversed.reverse();
        let mut interleaved: Vec<&Envelope<ShopEvent>> = in_order.iter().skip(1).step_by(2).chain(in_order.iter().step_by(2)).copied().collect();
        for other in [&mut reversed, &mut interleaved] {
            assert_eq!(fold(other), expected);
        }
    }

    /// A copy of an event (same `ce_id`, another offset: a redelivery) changes nothing.
    #[test]
    fn an_event_delivered_twice_is_applied_once() {
        let events = timed_out();
        let once: Vec<&Envelope<ShopEvent>> = events.iter().collect();
        let expected = fold(&once);
        let copies: Vec<Envelope<ShopEvent>> = events.iter().map(|e| Envelope { position: Position { offset: e.position.offset + 1_000_000, ..e.position.clone() }, ..e.clone() }).collect();
        let twice: Vec<&Envelope<ShopEvent>> = events.iter().chain(&copies).collect();
        assert_eq!(fold(&twice), expected, "events counted once");
    }
}
