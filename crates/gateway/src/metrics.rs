//! The gateway's metrics, recorded through the `metrics` crate (the binary installs the
//! Prometheus recorder; `/metrics` renders it).
//!
//! - `herald_gateway_requests_total{route, status}`: requests answered, by route name
//!   (`unmatched` for no route) and status code.
//! - `herald_gateway_request_seconds{route}`: latency histogram, request to response.
//! - `herald_gateway_breaker_state`: 0 closed, 1 open, 2 half open.
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
    let value = match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
    };
    metrics::gauge!("herald_gateway_breaker_state").set(value);
}
