//! The `order_totals` projection: orders and spend per customer.

use std::collections::HashMap;

use herald_bus::Envelope;
use herald_projector::{BatchError, Column, Projection, ProjectionError, Tx, Value};
use herald_shop::OrderEvent;

/// `customer_totals(customer_id, orders, total_cents)`: `OrderPlaced` adds an order and its
/// total to its customer, `OrderCancelled` takes them away again. Cancelling an unknown or
/// already cancelled order changes nothing; a second `OrderPlaced` for a known order is
/// ignored. The auxiliary table `order_totals_orders` remembers each order and its state.
/// A negative total is a permanent error (a poison event).
///
/// A batch is folded in memory ([`Projection::apply_batch`]): one statement inserts the
/// orders the batch places (as the batch leaves them) and says which were new; only the
/// others are read back; the events move orders and their customers' sums in memory; then
/// one statement writes the other changed orders (usually none) and one each customer's
/// change, however many of the batch's events touched it.
pub struct OrderTotals;

/// An order as the fold sees it.
struct Order<'a> {
    customer: &'a str,
    total: i64,
    cancelled: bool,
    /// Written back at the end of the batch.
    changed: bool,
}

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

    fn apply_batch(&self, tx: &mut dyn Tx, events: &[&Envelope<OrderEvent>]) -> Result<(), BatchError> {
        let (totals, orders) = (tx.table("customer_totals"), tx.table("order_totals_orders"));
        // Each order the batch names, as the batch alone leaves it when it was not stored
        // before (`None`: its first event is a cancellation, so what it does depends on
        // the stored order).
        let mut batch_local: HashMap<&str, Option<Order<'_>>> = HashMap::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            match &event.event {
                OrderEvent::Placed(p) if p.total_cents < 0 => {
                    return Err(BatchError::at(i, ProjectionError::Permanent(format!("order {} has a negative total {}", p.order_id, p.total_cents))));
                }
                OrderEvent::Placed(p) => {
                    batch_local.entry(&p.order_id).or_insert(Some(Order { customer: &p.customer_id, total: p.total_cents, cancelled: false, changed: true }));
                }
                OrderEvent::Cancelled(c) => {
                    if let Some(order) = batch_local.entry(&c.order_id).or_insert(None) {
                        order.cancelled = true;
                    }
                }
                OrderEvent::Confirmed(_) => {}
            }
        }
        // Orders placed first in this batch are written as the batch leaves them, in one
        // statement; the database says which were new. Only the others (placed before,
        // or cancelled first) are read back: usually none or a few.
        let mut placed: Vec<(&str, &Order<'_>)> = batch_local.iter().filter_map(|(id, o)| Some((*id, o.as_ref()?))).collect();
        placed.sort_unstable_by_key(|(id, _)| *id);
        let ids: Vec<&str> = placed.iter().map(|(id, _)| *id).collect();
        let insert = format!("INSERT INTO {orders} (order_id, customer_id, total_cents, state) {{rows}} ON CONFLICT (order_id) DO NOTHING");
        let columns = [
            Column::Text(&ids),
            Column::Text(&placed.iter().map(|(_, o)| o.customer).collect::<Vec<_>>()),
            Column::Int(&placed.iter().map(|(_, o)| o.total).collect::<Vec<_>>()),
            Column::Text(&placed.iter().map(|(_, o)| if o.cancelled { "cancelled" } else { "placed" }).collect::<Vec<_>>()),
        ];
        // SQLite runs the insert row by row and counts each row's change for free (a
        // `RETURNING` clause would build a temporary table at every row); PostgreSQL runs
        // it once and says with `RETURNING` which rows it inserted.
        let new: std::collections::HashSet<&str> = if tx.kind() == "sqlite" {
            let changed = tx.execute_each_row(&insert, &columns)?;
            ids.iter().zip(changed).filter(|(_, n)| *n > 0).map(|(id, _)| *id).collect()
        } else {
            let inserted = tx.query_rows(&format!("{insert} RETURNING order_id"), &columns)?;
            let inserted: std::collections::HashSet<String> = inserted.iter().map(|r| r.text(0).map(str::to_owned)).collect::<Result<_, _>>()?;
            ids.iter().copied().filter(|id| inserted.contains(*id)).collect()
        };
        let mut unknown: Vec<&str> = batch_local.keys().copied().filter(|id| !new.contains(id)).collect();
        unknown.sort_unstable();
        let stored = tx.query_rows(
            &format!("SELECT order_id, customer_id, total_cents, state FROM {orders} WHERE order_id IN ({{rows}})"),
            &[Column::Text(&unknown)],
        )?;
        let mut known: HashMap<&str, Order<'_>> = HashMap::with_capacity(stored.len());
        for row in &stored {
            known.insert(row.text(0)?, Order { customer: row.text(1)?, total: row.int(2)?, cancelled: row.text(3)? == "cancelled", changed: false });
        }
        // The events, in order, in memory: what `apply` does to the tables, done to the map.
        let mut sums: HashMap<&str, (i64, i64)> = HashMap::new();
        for event in events {
            match &event.event {
                OrderEvent::Placed(p) => {
                    if known.contains_key(p.order_id.as_str()) {
                        continue;
                    }
                    // New orders are written already; others placed here are written below.
                    let changed = !new.contains(p.order_id.as_str());
                    known.insert(&p.order_id, Order { customer: &p.customer_id, total: p.total_cents, cancelled: false, changed });
                    let sum = sums.entry(&p.customer_id).or_default();
                    *sum = (sum.0 + 1, sum.1 + p.total_cents);
                }
                OrderEvent::Cancelled(c) => {
                    if let Some(order) = known.get_mut(c.order_id.as_str())
                        && !order.cancelled
                    {
                        order.cancelled = true;
                        order.changed |= !new.contains(c.order_id.as_str());
                        let sum = sums.entry(order.customer).or_default();
                        *sum = (sum.0 - 1, sum.1 - order.total);
                    }
                }
                OrderEvent::Confirmed(_) => {}
            }
        }
        // Written in key order, so that two writers lock shared rows in the same order.
        let mut changed: Vec<(&str, &Order<'_>)> = known.iter().filter(|(_, o)| o.changed).map(|(k, o)| (*k, o)).collect();
        changed.sort_unstable_by_key(|(k, _)| *k);
        tx.execute_rows(
            &format!("INSERT INTO {orders} (order_id, customer_id, total_cents, state) {{rows}} ON CONFLICT (order_id) DO UPDATE SET state = excluded.state"),
            &[
                Column::Text(&changed.iter().map(|(k, _)| *k).collect::<Vec<_>>()),
                Column::Text(&changed.iter().map(|(_, o)| o.customer).collect::<Vec<_>>()),
                Column::Int(&changed.iter().map(|(_, o)| o.total).collect::<Vec<_>>()),
                Column::Text(&changed.iter().map(|(_, o)| if o.cancelled { "cancelled" } else { "placed" }).collect::<Vec<_>>()),
            ],
        )?;
        let mut sums: Vec<(&str, (i64, i64))> = sums.into_iter().collect();
        sums.sort_unstable_by_key(|(k, _)| *k);
        tx.execute_rows(
            &format!(
                "INSERT INTO {totals} (customer_id, orders, total_cents) {{rows}} \
                 ON CONFLICT (customer_id) DO UPDATE SET orders = {totals}.orders + excluded.orders, total_cents = {totals}.total_cents + excluded.total_cents"
            ),
            &[
                Column::Text(&sums.iter().map(|(k, _)| *k).collect::<Vec<_>>()),
                Column::Int(&sums.iter().map(|(_, (n, _))| *n).collect::<Vec<_>>()),
                Column::Int(&sums.iter().map(|(_, (_, c))| *c).collect::<Vec<_>>()),
            ],
        )?;
        Ok(())
    }
}
