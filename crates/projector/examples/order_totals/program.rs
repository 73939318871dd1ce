//! The program itself, shared by `order_totals` and the fault tests' `order_totals_crash`.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herald_projector::app::{App, AppError};
use herald_projector::{Connection, Store, Value};
use herald_shop::OrderEvent;

use crate::projection::OrderTotals;

/// Runs the program (the `main` of both builds).
#[tokio::main]
pub async fn run() -> Result<(), AppError> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
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
