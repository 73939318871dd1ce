//! HTTP endpoints of a projector: `GET /status`, and operator actions
//! `POST /partitions/{partition}/retry` and `POST /partitions/{partition}/skip`.
//!
//! Merge [`router`] with `herald_ops::router` (for `/health` and `/metrics`) and the
//! view's own query routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::runner::Control;
use crate::status::{Status, StatusHandle};

#[derive(Clone)]
struct Http {
    status: StatusHandle,
    control: Control,
}

/// The router with `/status` and the operator routes.
pub fn router(status: StatusHandle, control: Control) -> Router {
    Router::new()
        .route("/status", get(status_handler))
        .route("/partitions/{partition}/retry", post(retry_handler))
        .route("/partitions/{partition}/skip", post(skip_handler))
        .with_state(Http { status, control })
}

async fn status_handler(State(http): State<Http>) -> Json<Status> {
    Json(http.status.get())
}

async fn retry_handler(State(http): State<Http>, Path(partition): Path<i32>) -> StatusCode {
    if http.control.retry(partition) { StatusCode::ACCEPTED } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn skip_handler(State(http): State<Http>, Path(partition): Path<i32>) -> StatusCode {
    if http.control.skip(partition) { StatusCode::ACCEPTED } else { StatusCode::SERVICE_UNAVAILABLE }
}
