//! `herald-outbox-relay`: relays one outbox table to Kafka, with `/health` and `/metrics`.
//!
//! ```sh
//! herald-outbox-relay --postgres postgres://herald@127.0.0.1:55432/herald --table shop_outbox \
//!     --bootstrap 127.0.0.1:9092 --http 127.0.0.1:9471
//! ```
//!
//! Run as many as you like on one table: they share its buckets. Each registers in the
//! service registry as `outbox-relay` under its `--instance` name. Stops in order on
//! SIGINT or SIGTERM (finishes its batch, releases its buckets, flushes the producer,
//! deregisters).
//!
//! This binary has no crash points: the fault tests run `examples/relay_crash.rs`, the
//! same program built with the `crash-points` feature.

mod program;

/// jemalloc, not glibc's malloc: measured in BENCHMARKS.md ("Aggregates: the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    program::run(None).await
}
