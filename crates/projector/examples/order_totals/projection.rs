//! The `order_totals` projection: orders and spend per customer.

use herald_bus::Envelope;
use herald_projector::{Projection, ProjectionError, Tx, Value};
use herald_shop::OrderEvent;

/// `customer_totals(customer_id, orders, total_cents)`: `OrderPlaced` adds an order and its
/// total to its customer, `OrderCancelled` takes them away again. Cancelling an unknown or
/// already cancelled order changes nothing; a second `OrderPlaced` for a known order is
/// ignored. The auxiliary table `order_totals_orders` remembers each order and its state.
/// A negative total is a permanent error (a poison event).
pub struct OrderTotals;

impl Projection<OrderEvent> for OrderTotals {
    const NAME: &'static str = "order_totals";

    fn views(&self) -> &'static [&'static str] {
        &["customer_totals"]
    }

    fn migrate(&self, tx: &mut dyn Tx) -> Result<(), ProjectionError> {
        let (totals, orders) = (tx.table("customer_totals"), tx.table("order_totals_orders"));
        tx.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {totals} (customer_id TEXT PRIMARY KEY, orders BIGINT NOT NULL, total_cents BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS {orders} (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, total_cents BIGINT NOT NULL, state TEXT NOT NULL);"
        ))?;
        Ok(())
    }

    fn apply(&self, tx: &mut dyn Tx, event: &Envelope<OrderEvent>) -> Result<(), ProjectionError> {
        let (totals, orders) = (tx.table("customer_totals"), tx.table("order_totals_orders"));
        match &event.event {
            OrderEvent::Placed(placed) => {
                if placed.total_cents < 0 {
                    return Err(ProjectionError::Permanent(format!("order {} has a negative total {}", placed.order_id, placed.total_cents)));
                }
                let inserted = tx.execute(
                    &format!("INSERT INTO {orders} (order_id, customer_id, total_cents, state) VALUES ($1, $2, $3, 'placed') ON CONFLICT (order_id) DO NOTHING"),
                    &[Value::Text(&placed.order_id), Value::Text(&placed.customer_id), Value::Int(placed.total_cents)],
                )?;
                if inserted == 1 {
                    tx.execute(
                        &format!(
                            "INSERT INTO {totals} (customer_id, orders, total_cents) VALUES ($1, 1, $2) \
                             ON CONFLICT (customer_id) DO UPDATE SET orders = {totals}.orders + 1, total_cents = {totals}.total_cents + excluded.total_cents"
                        ),
                        &[Value::Text(&placed.customer_id), Value::Int(placed.total_cents)],
                    )?;
                }
            }
            OrderEvent::Cancelled(cancelled) => {
                let row = tx.query_opt(
                    &format!("UPDATE {orders} SET state = 'cancelled' WHERE order_id = $1 AND state = 'placed' RETURNING customer_id, total_cents"),
                    &[Value::Text(&cancelled.order_id)],
                )?;
                if let Some(row) = row {
                    let (customer, total) = (row.text(0)?.to_owned(), row.int(1)?);
                    tx.execute(
                        &format!("UPDATE {totals} SET orders = orders - 1, total_cents = total_cents - $2 WHERE customer_id = $1"),
                        &[Value::Text(&customer), Value::Int(total)],
                    )?;
                }
            }
            OrderEvent::Confirmed(_) => {}
        }
        Ok(())
    }
}
