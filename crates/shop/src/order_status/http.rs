//! The view over HTTP, as JSON:
//! - `GET /views/order_status/{order_id}`: one order ([`OrderStatusRow`]); `404` when
//!   unknown.
//! - `GET /views/order_status?status=cancelled&reason=timeout&limit=100`: a list, most
//!   recently changed first (every parameter optional; `limit` defaults to 1000).
//!
//! `503` when the store cannot be read. Merge [`router`] with `herald_ops::router` for
//! `/health` and `/metrics`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herald_projector::{Connection, Store, StoreError};

use super::query::{self, Filter, OrderStatusRow};

/// Query parameters of the list.
#[derive(Debug, Default, serde::Deserialize)]
struct ListParams {
    status: Option<String>,
    reason: Option<String>,
    limit: Option<usize>,
}

/// The view's routes over `store`.
pub fn router(store: Arc<dyn Store>) -> Router {
    Router::new().route("/views/order_status", get(list)).route("/views/order_status/{order_id}", get(one)).with_state(store)
}

type Failure = (StatusCode, String);

async fn one(State(store): State<Arc<dyn Store>>, Path(order_id): Path<String>) -> Result<Json<OrderStatusRow>, Failure> {
    let found = blocking(store, move |conn| query::get(conn, &order_id)).await?;
    found.map(Json).ok_or((StatusCode::NOT_FOUND, "no such order".to_owned()))
}

async fn list(State(store): State<Arc<dyn Store>>, Query(params): Query<ListParams>) -> Result<Json<Vec<OrderStatusRow>>, Failure> {
    let filter = Filter { status: params.status, reason: params.reason, limit: params.limit.unwrap_or(1000) };
    blocking(store, move |conn| query::list(conn, &filter)).await.map(Json)
}

async fn blocking<T: Send + 'static>(store: Arc<dyn Store>, f: impl FnOnce(&mut dyn Connection) -> Result<T, StoreError> + Send + 'static) -> Result<T, Failure> {
    let unavailable = |e: String| (StatusCode::SERVICE_UNAVAILABLE, e);
    tokio::task::spawn_blocking(move || {
        let mut conn = store.connect()?;
        f(&mut *conn)
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?
    .map_err(|e| unavailable(e.to_string()))
}
