//! # herald-bench: how fast Herald is next to raw rdkafka
//!
//! Throughput benchmarks against a real broker, run by the `bus` binary
//! (`cargo run --release -p herald-bench --bin bus -- --help`), and a criterion benchmark
//! of the Avro codec alone (`cargo bench -p herald-bench --features criterion --bench
//! codec`). Results and the machine they were measured on are kept in `BENCHMARKS.md` at
//! the repository root.
//!
//! # Layout
//! - [`workload`]: the events every variant sends: `OrderPlaced` of a fixed encoded size,
//!   and the same events pre-encoded for the raw baseline.
//! - [`produce`]: one timed publish run each for Herald's `publish_all`, a bounded loop of
//!   Herald's `publish`, and a raw rdkafka `FutureProducer` that builds the same records
//!   in its loop (the baseline) or sends them pre-encoded (the ceiling).
//! - [`consume`]: one timed consume run each for Herald's `Consumer`, a raw
//!   `StreamConsumer` that decodes with serde_avro_fast (the baseline) or apache-avro's
//!   `Value` path (for scale), and one that does not decode (the ceiling).
//! - [`perf_test`]: Kafka's own `kafka-producer-perf-test` on the same broker, for scale.
//! - [`broker`]: client settings shared by Herald and the baselines, unique topic names,
//!   topic clean-up.
//! - [`stats`]: medians and spreads over rounds. [`machine`]: what the numbers ran on.
//!
//! # What is compared, and how fairly
//! - **Same settings.** The raw clients get exactly Herald's properties
//!   ([`herald_bus::publisher::PRODUCER_DEFAULTS`],
//!   [`herald_bus::consumer::CONSUMER_DEFAULTS`]) plus the bootstrap address, so only the
//!   code on top of librdkafka differs.
//! - **Same bytes, same work.** The baseline producer builds each record in its timed loop
//!   as an application would (CloudEvents headers with a fresh id and time, frame, datum
//!   encoded with serde_avro_fast), byte for byte Herald's record; the ceiling sends
//!   records Herald encoded before the timer. Herald's time includes the same work.
//! - **CPU per event** is measured in the timed window ([`machine::CpuTime::steady`]) and
//!   over each variant's whole run.
//! - **Same in-flight bound.** Both keep at most 10 000 sends awaiting delivery and
//!   await every delivery report.
//! - **Same records.** The consumers read one pre-filled topic, each in a new group.
//!   Their rate is taken from the first to the last record, so the group join (reported
//!   separately) does not count.
//! - **Noise.** Variants alternate within each round (the order rotates), and results are
//!   reported as median and spread over rounds.

pub mod broker;
pub mod consume;
pub mod machine;
pub mod perf_test;
pub mod produce;
pub mod stats;
pub mod workload;

/// Any failure of a benchmark run; the binary prints it and stops.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
