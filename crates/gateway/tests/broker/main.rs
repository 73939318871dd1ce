//! The gateway against the real broker (KAFKA_BOOTSTRAP_SERVERS): every status code, and
//! bad input never becoming an event.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

mod auth;
mod binary;
mod browser;
mod conformance;
mod dashboard;
mod idempotency;
mod jwt_interop;
mod limits;
mod queries;
mod routes;
