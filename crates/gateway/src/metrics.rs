//! The gateway's metrics, recorded through the `metrics` crate (the binary installs the
//! Prometheus recorder; `/metrics` renders it).
//!
//! - `herald_gateway_requests_total{route, status}`: requests answered, by route name
//!   (`unmatched` for no route) and status code.
//! - `herald_gateway_request_seconds{route}`: latency histogram, request to response.
//! - `herald_gateway_breaker_state`: 0 closed, 1 open, 2 half open.
//! - `herald_gateway_upstream_requests_total{route, service, instance, outcome}`: what a
//!   query route's backend did with a request (`ok`, `error`, `timeout`, `unreachable`,
//!   `hung-up`: the connection closed before an answer).
//! - `herald_gateway_backend_healthy{service, instance}`: 1 when its last health check
//!   passed (or none ran yet), 0 when it failed.
//! - `herald_gateway_backend_breaker_state{service, instance}`: its circuit, as above.
//!
//! The publisher records `herald_publish*` series beside them.

use std::time::Duration;

use crate::breaker::State;

/// Records one answered request.
pub fn request(route: &str, status: u16, elapsed: Duration) {
    let route = route.to_owned();
    metrics::counter!("herald_gateway_requests_total", "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("herald_gateway_request_seconds", "route" => route).record(elapsed.as_secs_f64());
}

/// Records the breaker's state.
pub fn breaker(state: State) {
    metrics::gauge!("herald_gateway_breaker_state").set(state_value(state));
}

fn state_value(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
    }
}

/// Records what a query route's backend did with one request.
pub fn upstream(route: &str, service: &str, instance: &str, outcome: &'static str) {
    metrics::counter!("herald_gateway_upstream_requests_total", "route" => route.to_owned(), "service" => service.to_owned(), "instance" => instance.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Records a backend's health check verdict and circuit.
pub fn backend(service: &str, instance: &str, checked: crate::query::backends::Checked, breaker: State) {
    let healthy = if checked == crate::query::backends::Checked::Failing { 0.0 } else { 1.0 };
    metrics::gauge!("herald_gateway_backend_healthy", "service" => service.to_owned(), "instance" => instance.to_owned()).set(healthy);
    metrics::gauge!("herald_gateway_backend_breaker_state", "service" => service.to_owned(), "instance" => instance.to_owned()).set(state_value(breaker));
}
