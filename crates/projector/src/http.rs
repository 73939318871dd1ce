//! HTTP endpoints of a projector: `GET /status`, and operator actions
//! `POST /partitions/{partition}/retry` and `POST /partitions/{partition}/skip` (`202`, or
//! `409` with the reason when the partition is not waiting for a decision).
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

async fn retry_handler(State(http): State<Http>, Path(partition): Path<i32>) -> (StatusCode, String) {
    decided(http.control.retry(partition), partition, "its record is tried again")
}

async fn skip_handler(State(http): State<Http>, Path(partition): Path<i32>) -> (StatusCode, String) {
    decided(http.control.skip(partition), partition, "its record is dead-lettered and the partition moves on")
}

/// `202 Accepted` when the partition's circuit took the decision; else `409 Conflict`,
/// saying why nothing was waiting for one (both in plain text, for people and scripts).
fn decided(taken: bool, partition: i32, what: &str) -> (StatusCode, String) {
    if taken {
        (StatusCode::ACCEPTED, format!("partition {partition}: {what}\n"))
    } else {
        let why = format!(
            "partition {partition} is not stopped at a record in this process: only a projector run with --on-poison pause stops at one (GET /status shows each partition's state as circuit-open). \
             A parked partition (its dead letter cannot be written) waits for its dead-letter topic to be fixed and the projector restarted\n"
        );
        (StatusCode::CONFLICT, why)
    }
}
