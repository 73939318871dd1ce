//! The tracker over HTTP: `GET /sagas` and `GET /sagas/{id}`, as JSON.
//!
//! - `GET /sagas?stuck=true&state=failed&older_than=10m&limit=100`: [`Summary`] list,
//!   most recently active first (every parameter optional).
//! - `GET /sagas/{id}`: one saga ([`Detail`]: its summary and timeline) by correlation id
//!   or subject; `404` when unknown.
//!
//! Merge [`router`] with `herald_ops::router` for `/health` and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herald_projector::Store;

use crate::query::{self, Detail, Filter, Summary};
use crate::state::State;
use herald_ops::parse_duration;

#[derive(Clone)]
struct Http {
    store: Arc<dyn Store>,
    stuck_after: Duration,
}

/// Query parameters of `GET /sagas`.
#[derive(Debug, Default, serde::Deserialize)]
struct ListParams {
    stuck: Option<bool>,
    state: Option<String>,
    older_than: Option<String>,
    limit: Option<usize>,
}

/// The routes over `store`, where sagas quiet for longer than `stuck_after` are stuck.
pub fn router(store: Arc<dyn Store>, stuck_after: Duration) -> Router {
    Router::new().route("/sagas", get(list)).route("/sagas/{id}", get(show)).with_state(Http { store, stuck_after })
}

type Failure = (StatusCode, String);

async fn list(AxumState(http): AxumState<Http>, Query(params): Query<ListParams>) -> Result<Json<Vec<Summary>>, Failure> {
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let filter = Filter {
        stuck: params.stuck.unwrap_or(false),
        state: params.state.as_deref().map(parse_state).transpose().map_err(bad)?,
        older_than: params.older_than.as_deref().map(parse_duration).transpose().map_err(bad)?,
        stuck_after: http.stuck_after,
        limit: params.limit.unwrap_or(1000),
    };
    blocking(http.store, move |conn| query::list(conn, &filter, chrono::Utc::now())).await.map(Json)
}

async fn show(AxumState(http): AxumState<Http>, Path(id): Path<String>) -> Result<Json<Detail>, Failure> {
    let stuck_after = http.stuck_after;
    let found = blocking(http.store, move |conn| query::show(conn, &id, chrono::Utc::now(), stuck_after)).await?;
    found.map(Json).ok_or((StatusCode::NOT_FOUND, "no such saga".to_owned()))
}

/// Parses a state's name (`running`, `completed`, `compensated`, `failed`, `stuck`).
pub fn parse_state(s: &str) -> Result<State, String> {
    [State::Running, State::Completed, State::Compensated, State::Failed, State::Stuck]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| format!("unknown state {s:?} (running, completed, compensated, failed, stuck)"))
}

async fn blocking<T: Send + 'static>(
    store: Arc<dyn Store>,
    f: impl FnOnce(&mut dyn herald_projector::Connection) -> Result<T, herald_projector::StoreError> + Send + 'static,
) -> Result<T, Failure> {
    let unavailable = |e: String| (StatusCode::SERVICE_UNAVAILABLE, e);
    tokio::task::spawn_blocking(move || {
        let mut conn = store.connect()?;
        f(&mut *conn)
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?
    .map_err(|e| unavailable(e.to_string()))
}
