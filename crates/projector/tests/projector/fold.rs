//! The `order_totals` projection's fold, given/when/then, against SQLite and without a
//! broker: what each event does to `customer_totals`.

use herald_bus::{Envelope, Metadata, Position};
use herald_projector::{store, Projection};
use herald_shop::{OrderCancelled, OrderEvent, OrderPlaced};
use crate::projection::OrderTotals;

use crate::support::*;

fn envelope(event: OrderEvent, offset: i64) -> Envelope<OrderEvent> {
    use herald_bus::EventFamily;
    let meta = Metadata::new(event.type_name(), "/test", event.aggregate_id());
    Envelope { event, meta, position: Position { topic: "t".into(), partition: 0, offset } }
}

fn placed(order: &str, customer: &str, total: i64) -> OrderEvent {
    OrderEvent::Placed(OrderPlaced::example(order, customer, total))
}

fn cancelled(order: &str) -> OrderEvent {
    OrderEvent::Cancelled(OrderCancelled::example(order, "r", None))
}

/// Applies `events` in one transaction to a fresh store and returns the view.
async fn given(events: Vec<OrderEvent>) -> Result<View, String> {
    let url = fresh_store(Backend::Sqlite).await.expect("sqlite");
    let store = store::open(&url).expect("store");
    let applied = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut conn = store.connect().map_err(|e| e.to_string())?;
        let mut tx = conn.begin(1).map_err(|e| e.to_string())?;
        OrderTotals.migrate(tx.as_tx()).map_err(|e| e.to_string())?;
        for (i, e) in events.into_iter().enumerate() {
            OrderTotals.apply(tx.as_tx(), &envelope(e, i as i64)).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    })
    .await
    .expect("task");
    applied?;
    Ok(read_table(&url, "customer_totals__v1").await)
}

#[tokio::test]
async fn placing_orders_adds_them_to_their_customer() {
    let view = given(vec![placed("o1", "c1", 100), placed("o2", "c1", 50), placed("o3", "c2", 7)]).await.expect("applies");
    assert_eq!(view, View::from([("c1".into(), (2, 150)), ("c2".into(), (1, 7))]));
}

#[tokio::test]
async fn cancelling_takes_an_order_away_once() {
    let view = given(vec![placed("o1", "c1", 100), placed("o2", "c1", 50), cancelled("o1"), cancelled("o1")]).await.expect("applies");
    assert_eq!(view, View::from([("c1".into(), (1, 50))]));
}

#[tokio::test]
async fn cancelling_an_unknown_order_changes_nothing_and_a_repeated_placement_is_ignored() {
    let view = given(vec![cancelled("o9"), placed("o1", "c1", 100), placed("o1", "c1", 100), placed("o9", "c2", 5)]).await.expect("applies");
    assert_eq!(view, View::from([("c1".into(), (1, 100)), ("c2".into(), (1, 5))]));
}

#[tokio::test]
async fn a_negative_total_is_a_permanent_error() {
    let err = given(vec![placed("o1", "c1", -1)]).await.expect_err("refused");
    assert!(err.contains("negative total"), "{err}");
}
