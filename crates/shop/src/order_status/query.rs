//! Reading the view: [`get`] one order, [`list`] orders. These block: call them from a
//! blocking thread in async code.

use herald_projector::store::{OwnedValue, Row};
use herald_projector::{Connection, StoreError, Value};
use serde::{Deserialize, Serialize};

/// `status` of an order with no outcome yet.
pub const PLACED: &str = "placed";
/// `status` of a confirmed order.
pub const CONFIRMED: &str = "confirmed";
/// `status` of a cancelled order (see `reason`).
pub const CANCELLED: &str = "cancelled";

/// One order as the view shows it. Times are milliseconds since the epoch (event times,
/// `ce_time`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatusRow {
    /// The order.
    pub order_id: String,
    /// Who ordered (from `OrderPlaced`, or `StockReserved` until it is seen).
    pub customer_id: Option<String>,
    /// Order total in minor units.
    pub total_cents: Option<i64>,
    /// ISO 4217 currency code.
    pub currency: Option<String>,
    /// `placed`, `confirmed` or `cancelled`.
    pub status: String,
    /// Why it was cancelled: `out-of-stock`, `payment-declined`, `timeout`, or a
    /// customer's reason.
    pub reason: Option<String>,
    /// Who cancelled it (`system` for the saga).
    pub cancelled_by: Option<String>,
    /// More about a refusal: the short SKU, or why the payment was declined.
    pub detail: Option<String>,
    /// What the stock did: `reserved`, `rejected`, `released`.
    pub stock: Option<String>,
    /// What the payment did: `charged`, `declined`, `refunded`.
    pub payment: Option<String>,
    /// Amount charged, in minor units.
    pub charged_cents: Option<i64>,
    /// Amount refunded, in minor units.
    pub refunded_cents: Option<i64>,
    /// The payment's id.
    pub payment_id: Option<String>,
    /// The saga's last step: the type (short name) of the order's latest event.
    pub last_step: String,
    /// When the last step happened.
    pub last_step_ms: i64,
    /// When the order was placed (`OrderPlaced`'s event time).
    pub placed_ms: Option<i64>,
    /// When it was confirmed or cancelled (the terminal event's time).
    pub decided_ms: Option<i64>,
    /// Events of the order applied.
    pub events: i64,
    /// The latest event time of the order.
    pub updated_ms: i64,
}

impl OrderStatusRow {
    /// Whether the order reached its outcome.
    ///
    /// ```
    /// # let row: herald_shop::order_status::OrderStatusRow = serde_json::from_value(serde_json::json!({
    /// #   "order_id": "o-1", "customer_id": null, "total_cents": null, "currency": null, "status": "cancelled",
    /// #   "reason": "timeout", "cancelled_by": "system", "detail": null, "stock": null, "payment": null,
    /// #   "charged_cents": null, "refunded_cents": null, "payment_id": null, "last_step": "OrderCancelled",
    /// #   "last_step_ms": 1, "placed_ms": null, "decided_ms": 1, "events": 1, "updated_ms": 1})).unwrap();
    /// assert!(row.is_decided());
    /// assert_eq!(row.outcome(), "cancelled: timeout");
    /// ```
    pub fn is_decided(&self) -> bool {
        self.status != PLACED
    }

    /// `confirmed`, `cancelled: REASON` or `placed`: the outcome as one label.
    pub fn outcome(&self) -> String {
        match (&*self.status, &self.reason) {
            (CANCELLED, Some(reason)) => format!("{CANCELLED}: {reason}"),
            (status, _) => status.to_owned(),
        }
    }
}

/// Which orders [`list`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Filter {
    /// Only this `status`.
    pub status: Option<String>,
    /// Only this cancellation `reason`.
    pub reason: Option<String>,
    /// At most this many, most recently changed first.
    pub limit: usize,
}

impl Default for Filter {
    /// Every order, at most 1000.
    fn default() -> Self {
        Filter { status: None, reason: None, limit: 1000 }
    }
}

const COLUMNS: &str = "order_id, customer_id, total_cents, currency, status, reason, cancelled_by, detail, stock, payment, charged_cents, \
                       refunded_cents, payment_id, last_step, last_step_ms, placed_ms, decided_ms, events, updated_ms";

/// Order `order_id`, if the view knows it.
///
/// # Errors
/// The store cannot be read (or the view does not exist yet: no projector ran on it).
pub fn get(conn: &mut dyn Connection, order_id: &str) -> Result<Option<OrderStatusRow>, StoreError> {
    let mut tx = conn.read()?;
    let row = tx.query_opt(&format!("SELECT {COLUMNS} FROM order_status WHERE order_id = $1"), &[Value::Text(order_id)])?;
    tx.rollback()?;
    row.as_ref().map(row_of).transpose()
}

/// The orders matching `filter`, most recently changed first.
///
/// # Errors
/// The store cannot be read (or the view does not exist yet).
pub fn list(conn: &mut dyn Connection, filter: &Filter) -> Result<Vec<OrderStatusRow>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM order_status WHERE 1 = 1");
    let mut params = Vec::new();
    if let Some(status) = &filter.status {
        params.push(Value::Text(status));
        sql.push_str(&format!(" AND status = ${}", params.len()));
    }
    if let Some(reason) = &filter.reason {
        params.push(Value::Text(reason));
        sql.push_str(&format!(" AND reason = ${}", params.len()));
    }
    sql.push_str(&format!(" ORDER BY updated_ms DESC, order_id LIMIT {}", filter.limit));
    let mut tx = conn.read()?;
    let rows = tx.query(&sql, &params)?;
    tx.rollback()?;
    rows.iter().map(row_of).collect()
}

fn opt_text(row: &Row, i: usize) -> Result<Option<String>, StoreError> {
    match row.values.get(i) {
        Some(OwnedValue::Null) => Ok(None),
        _ => row.text(i).map(|s| Some(s.to_owned())),
    }
}

fn opt_int(row: &Row, i: usize) -> Result<Option<i64>, StoreError> {
    match row.values.get(i) {
        Some(OwnedValue::Null) => Ok(None),
        _ => row.int(i).map(Some),
    }
}

fn row_of(row: &Row) -> Result<OrderStatusRow, StoreError> {
    Ok(OrderStatusRow {
        order_id: row.text(0)?.to_owned(),
        customer_id: opt_text(row, 1)?,
        total_cents: opt_int(row, 2)?,
        currency: opt_text(row, 3)?,
        status: row.text(4)?.to_owned(),
        reason: opt_text(row, 5)?,
        cancelled_by: opt_text(row, 6)?,
        detail: opt_text(row, 7)?,
        stock: opt_text(row, 8)?,
        payment: opt_text(row, 9)?,
        charged_cents: opt_int(row, 10)?,
        refunded_cents: opt_int(row, 11)?,
        payment_id: opt_text(row, 12)?,
        last_step: row.text(13)?.to_owned(),
        last_step_ms: row.int(14)?,
        placed_ms: opt_int(row, 15)?,
        decided_ms: opt_int(row, 16)?,
        events: row.int(17)?,
        updated_ms: row.int(18)?,
    })
}
