//! The fault tests' build of `order_totals`: the same program, built with the
//! `crash-points` feature so that `HERALD_PROJECTOR_CRASH_AT=stage:n` aborts it at a point
//! of the pipeline. Only the tests build it:
//!
//! ```sh
//! cargo build -p herald-projector --example order_totals_crash --features crash-points
//! ```

#[path = "order_totals/program.rs"]
mod program;
#[path = "order_totals/projection.rs"]
mod projection;

fn main() -> std::process::ExitCode {
    herald_projector::app::exit(program::run())
}
