//! Integration tests against a real Kafka broker.
//!
//! Run with `bash scripts/test` (starts the broker), or set `KAFKA_BOOTSTRAP_SERVERS`.
//! Every test uses its own topics and groups, so they run in parallel.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used)]

mod support;

mod consumer_groups;
mod dead_letters;
mod fatal;
mod flow;
mod faults;
mod interop;
mod ordering;
mod outage;
mod rebalance;
mod round_trip;
mod secured;
mod shutdown;
mod upcast;
