//! Integration and fault tests of the projector against the real broker, with SQLite and
//! PostgreSQL. They run the `order_totals` example as a separate process (so it can be
//! killed with SIGKILL or aborted at a crash point) and compare its view with a fold of
//! the topic computed here.

mod batched;
mod crash;
mod fold;
mod members;
mod panics;
mod parked;
mod poison;
#[path = "../../examples/order_totals/projection.rs"]
mod projection;
mod rebuild;
mod retry;
mod status;
mod support;
mod tls;
mod transient;
