//! `herald saga check|diagram`: the reference saga's static check and its Mermaid diagram,
//! from the participants' declarations (no broker needed).
//!
//! The saga checked is the one built into this `herald`: the shop's order fulfilment. A
//! team's own saga is checked the same way by calling
//! `herald_choreography::declaration::check` on its participants' declarations (in a unit
//! test, so CI refuses a saga that strands a step).

use crate::exit::{out, outln};

/// The saga commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the saga: every emitted event has a schema and a consumer or is terminal,
    /// every step a later failure can strand has a compensation, no reaction cycles.
    /// Exits 1 when a problem is found.
    Check,
    /// Print the saga as a Mermaid flowchart.
    Diagram,
}

/// Runs a saga command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check => {
            let report = herald_shop::saga::check();
            out!("{report}");
            anyhow::ensure!(report.is_ok(), "the saga does not pass its check");
        }
        Command::Diagram => outln!("{}", herald_shop::saga::diagram().trim_end()),
    }
    Ok(())
}
