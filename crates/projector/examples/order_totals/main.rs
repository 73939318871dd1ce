//! The reference projector: `customer_totals` from `shop.orders` events.
//!
//! ```sh
//! cargo run --release -p herald-projector --example order_totals -- \
//!     --topic shop.orders --group order-totals --store sqlite:order_totals.db
//! # or --store postgres://herald@127.0.0.1:55432/herald
//! curl localhost:PORT/views/customer_totals/customer-7
//! curl localhost:PORT/status
//! # rebuild beside the live view and swap, with a progress bar; roll back; time travel
//! cargo run --release -p herald-projector --example order_totals -- --store sqlite:order_totals.db --rebuild --progress
//! cargo run --release -p herald-projector --example order_totals -- --store sqlite:order_totals.db --rollback
//! cargo run --release -p herald-projector --example order_totals -- --store sqlite:order_totals.db --until-time 2026-11-26T08:00:00Z
//! ```
//!
//! The command line is `herald_projector::app`'s, the same for every projection. Installed
//! as `herald-projection-order_totals` on the `PATH`, this program is also what
//! `herald projector rebuild order_totals` runs.
//!
//! What it shows: the view and the projector's position commit in one transaction, so
//! killing it at any point (try `kill -9`, or `HERALD_PROJECTOR_CRASH_AT=after_apply:3` with
//! the fault tests' build: `--example order_totals_crash --features crash-points`)
//! and starting it again leaves `customer_totals` equal to a fold of the whole topic:
//! nothing lost, nothing counted twice. Poison events go to `<topic>.dlq` with a reason.
//!
//! Serves `GET /health`, `GET /metrics`, `GET /status`, `GET /views/customer_totals/{key}`
//! and `POST /partitions/{p}/retry|skip` on `--http` (default: a free port, printed as
//! `http: ADDR` on stdout). Stops cleanly on SIGTERM or ctrl-c.

mod program;
mod projection;

fn main() -> std::process::ExitCode {
    herald_projector::app::exit(program::run())
}
