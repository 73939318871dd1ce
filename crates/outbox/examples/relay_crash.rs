//! The fault tests' build of `herald-outbox-relay`: the same program, built with the
//! `crash-points` feature so that `HERALD_OUTBOX_CRASH_AT=STEP:N` (STEP one of `read`,
//! `produced`, `acknowledged`, `marked`) aborts it the Nth time a batch reaches that step.
//! Only the tests build it; the relay operators install has no crash points:
//!
//! ```sh
//! cargo build -p herald-outbox --example relay_crash --features crash-points
//! HERALD_OUTBOX_CRASH_AT=acknowledged:3 target/debug/examples/relay_crash --postgres postgres://herald@127.0.0.1:55432/herald
//! ```

#[path = "../src/bin/herald-outbox-relay/program.rs"]
mod program;

use herald_outbox::relay::CrashAt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let fault = match std::env::var("HERALD_OUTBOX_CRASH_AT") {
        Ok(crash) => {
            let crash: CrashAt = crash.parse().map_err(anyhow::Error::msg)?;
            eprintln!("crash point armed: HERALD_OUTBOX_CRASH_AT={crash:?}");
            Some(crash.into_hook())
        }
        Err(_) => None,
    };
    program::run(fault).await
}
