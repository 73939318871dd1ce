//! The reference projector: `customer_totals` from `shop.orders` events.
//!
//! ```sh
//! cargo run --release -p herald-projector --example order_totals -- \
//!     --topic shop.orders --group order-totals --store sqlite:order_totals.db
//! # or --store postgres://herald@127.0.0.1:55432/herald
//! curl localhost:PORT/views/customer_totals/customer-7
//! curl localhost:PORT/status
//! # rebuild beside the live view and swap, with a progress bar; roll back; time travel
//! cargo run --release -p herald-projector --example order_totals -- --store sqlite:order_totals.db --rebuild --progress
//! cargo run --release -p herald-projector --example order_totals -- --store sqlite:order_totals.db --rollback
//! cargo run --release -p herald-projector --example order_totals -- --store sqlite:order_totals.db --until-time 2026-11-26T08:00:00Z
//! ```
//!
//! The command line is `herald_projector::app`'s, the same for every projection. Installed
//! as `herald-projection-order_totals` on the `PATH`, this program is also what
//! `herald projector rebuild order_totals` runs.
//!
//! What it shows: the view and the projector's position commit in one transaction, so
//! killing it at any point (try `kill -9`, or `HERALD_PROJECTOR_CRASH_AT=after_apply:3`)
//! and starting it again leaves `customer_totals` equal to a fold of the whole topic:
//! nothing lost, nothing counted twice. Poison events go to `<topic>.dlq` with a reason.
//!
//! Serves `GET /health`, `GET /metrics`, `GET /status`, `GET /views/customer_totals/{key}`
//! and `POST /partitions/{p}/retry|skip` on `--http` (default: a free port, printed as
//! `http: ADDR` on stdout). Stops cleanly on SIGTERM or ctrl-c.

mod projection;

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herald_projector::app::{App, AppError};
use herald_projector::{Connection, Store, Value};
use herald_shop::OrderEvent;

use projection::OrderTotals;

#[tokio::main]
async fn main() -> Result<(), AppError> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).with_writer(std::io::stderr).init();
    App::<OrderEvent, _>::new("shop.orders", || OrderTotals)
        .routes(|store| Router::new().route("/views/customer_totals/{key}", get(customer_total)).with_state(Views { store, conn: Arc::new(Mutex::new(None)) }))
        .run()
        .await
}

#[derive(Clone)]
struct Views {
    store: Arc<dyn Store>,
    conn: Arc<Mutex<Option<Box<dyn Connection>>>>,
}

async fn customer_total(State(views): State<Views>, Path(key): Path<String>) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let found = tokio::task::spawn_blocking(move || {
        let mut conn = views.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_none() {
            *conn = Some(views.store.connect()?);
        }
        let c = conn.as_mut().ok_or_else(|| herald_projector::StoreError::Connect("no connection".into()))?;
        let read = (|| {
            let mut tx = c.read()?;
            let row = tx.query_opt("SELECT customer_id, orders, total_cents FROM customer_totals WHERE customer_id = $1", &[Value::Text(&key)])?;
            tx.rollback()?;
            Ok::<_, herald_projector::StoreError>(row)
        })();
        if read.is_err() {
            *conn = None;
        }
        read
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    match found {
        Some(row) => Ok(Json(row.to_json())),
        None => Err((StatusCode::NOT_FOUND, "no such customer".into())),
    }
}
