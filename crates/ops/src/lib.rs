//! # herald-ops: `/health` and `/metrics` for long-running Herald services
//!
//! Every Herald service (a consumer, a projector, a saga participant) serves two
//! endpoints for its operators:
//! - `GET /health`: `200` with a JSON report when the service is healthy, `503` otherwise.
//! - `GET /metrics`: Prometheus text format of everything recorded through the `metrics`
//!   crate (Herald records `herald_consumer_*` and `herald_publish*` series).
//!
//! The Prometheus recorder is process-global by the `metrics` crate's design, so only
//! binaries install it, once, with [`install_metrics`]; libraries just record.
//!
//! ```no_run
//! # async fn run(consumer: herald_bus::Consumer) -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = herald_ops::install_metrics()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! let health = consumer.health();
//! tokio::spawn(herald_ops::serve(listener, metrics, health, std::future::pending()));
//! # Ok(()) }
//! ```

mod duration;
pub mod server;
mod signal;
pub mod telemetry;

pub use duration::parse_duration;
pub use server::{serve_router, HEADER_READ_TIMEOUT};
pub use signal::shutdown_signal;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use metrics_exporter_prometheus::PrometheusHandle as MetricsHandle;

/// Something that can say whether it is healthy.
pub trait HealthCheck: Send + Sync + 'static {
    /// `(healthy, details)`; details are shown as JSON.
    fn check(&self) -> (bool, serde_json::Value);
}

impl HealthCheck for herald_bus::ConsumerHealth {
    fn check(&self) -> (bool, serde_json::Value) {
        let healthy = self.is_healthy();
        let mut details = serde_json::json!({
            "assigned_partitions": self.assigned_partitions(),
            "pauses": self.pauses(),
            // Why it is unhealthy, when a partition waits at a record.
            "parked": self.parked().into_iter().map(|(topic, partition, reason)| serde_json::json!({"topic": topic, "partition": partition, "reason": reason})).collect::<Vec<_>>(),
        });
        // With its age: librdkafka reports errors, not that they are over.
        self.show_last_error(&mut details);
        (healthy, details)
    }
}

impl<H: HealthCheck + ?Sized> HealthCheck for Arc<H> {
    fn check(&self) -> (bool, serde_json::Value) {
        (**self).check()
    }
}

/// The metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct InstallError(String);

/// Bucket bounds, in seconds, of every `*_seconds` histogram (0.5 ms to 10 s).
pub const SECONDS_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bucket bounds of Herald's one count histogram, `herald_choreography_transaction_reactions`.
pub const REACTIONS_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

/// The Prometheus exporter as every Herald process configures it: each histogram Herald
/// records is exported as a Prometheus *histogram* with the buckets above. (The exporter's
/// default is a summary: quantiles over one process's recent values, which cannot be
/// summed across instances nor turned into "the share of requests under 100 ms".)
///
/// ```
/// let recorder = herald_ops::prometheus().unwrap().build_recorder();
/// metrics::with_local_recorder(&recorder, || metrics::histogram!("herald_publish_seconds").record(0.003));
/// let text = recorder.handle().render();
/// assert!(text.contains("# TYPE herald_publish_seconds histogram"), "{text}");
/// assert!(text.contains("herald_publish_seconds_bucket{le=\"0.005\"} 1"), "{text}");
/// ```
pub fn prometheus() -> Result<PrometheusBuilder, InstallError> {
    let refused = |e: metrics_exporter_prometheus::BuildError| InstallError(e.to_string());
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .map_err(refused)?
        .set_buckets_for_metric(Matcher::Full("herald_choreography_transaction_reactions".to_owned()), REACTIONS_BUCKETS)
        .map_err(refused)
}

/// Installs the process-wide Prometheus recorder ([`prometheus`]) and returns the handle
/// `/metrics` renders. Call once, from `main`, **before building Herald's components**:
/// the `metrics` facade hands out a handle that records nowhere while no recorder is
/// installed, and the hot paths (a consumer's routes, an engine, a projector's partitions,
/// a publisher's topics) take their handles when they are built, so one built first
/// would never show on `/metrics`. (The outbox relay and inbox look theirs up at each use.)
pub fn install_metrics() -> Result<PrometheusHandle, InstallError> {
    prometheus()?.install_recorder().map_err(|e| InstallError(e.to_string()))
}

struct OpsState {
    metrics: PrometheusHandle,
    health: Box<dyn HealthCheck>,
}

/// The router with `/health` and `/metrics`, to merge into a service's own router.
pub fn router(metrics: PrometheusHandle, health: impl HealthCheck) -> Router {
    let state = Arc::new(OpsState { metrics, health: Box::new(health) });
    Router::new().route("/health", get(health_handler)).route("/metrics", get(metrics_handler)).with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes ([`serve_router`]: request
/// heads are bounded in time).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    health: impl HealthCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(metrics, health), shutdown).await
}

async fn health_handler(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    let (healthy, details) = state.health.check();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({ "status": if healthy { "ok" } else { "unhealthy" }, "details": details });
    (status, Json(body))
}

async fn metrics_handler(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(AtomicBool);
    impl HealthCheck for Flag {
        fn check(&self) -> (bool, serde_json::Value) {
            (self.0.load(Ordering::SeqCst), serde_json::json!({}))
        }
    }

    #[tokio::test]
    async fn health_follows_the_check_and_metrics_render() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || metrics::counter!("herald_test_total").increment(3));
        let flag = Arc::new(Flag(AtomicBool::new(true)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, handle, flag.clone(), std::future::pending()));
        let client = reqwest::Client::new();
        let ok = client.get(format!("http://{addr}/health")).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        flag.0.store(false, Ordering::SeqCst);
        let down = client.get(format!("http://{addr}/health")).send().await.unwrap();
        assert_eq!(down.status(), 503);
        let body: serde_json::Value = down.json().await.unwrap();
        assert_eq!(body["status"], "unhealthy");
        let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("herald_test_total 3"), "{metrics}");
    }
}
