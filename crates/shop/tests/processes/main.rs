//! The reference saga as processes against the real broker (issue 8, "Proof"): the
//! `shop` binary's three roles as child processes, each test on its own copy of the saga
//! (a unique `--topic-prefix`), checked from the public topics by an independent
//! read_committed reader ([`checker`]).
//!
//! Needs a broker (`KAFKA_BOOTSTRAP_SERVERS`, see herald-testkit); the broker-restart test
//! runs its own private broker through `scripts/kafka`.
//!
//! `cargo test -p herald-shop --test processes`

mod broker;
mod checker;
mod faults;
mod rules;
mod shop;

/// `kill -9`s of the chaos tests, each asserted reached; with the kills of the other tests
/// the suite kills well over the 50 the issue asks for.
pub const CHAOS_KILLS_ONE_EACH: usize = 25;
/// See [`CHAOS_KILLS_ONE_EACH`].
pub const CHAOS_KILLS_TWO_EACH: usize = 30;
const _: () = assert!(CHAOS_KILLS_ONE_EACH + CHAOS_KILLS_TWO_EACH >= 50);
