//! `herald-schemas`: the `herald schemas` commands as a standalone binary.
//!
//! ```sh
//! herald-schemas list
//! herald-schemas check                         # exit 1 on a violation
//! herald-schemas fingerprint schemas/shop/orders/OrderPlaced/v1.avsc
//! herald-schemas compat --mode FULL old.avsc new.avsc
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use herald_schema::cli::SchemasCommand;

/// Versioned Avro schemas: list, fingerprint, check, compat.
#[derive(Debug, Parser)]
#[command(name = "herald-schemas", version)]
struct Cli {
    /// The schemas folder.
    #[arg(long, env = "HERALD_SCHEMAS", default_value = "schemas", global = true)]
    schemas: PathBuf,
    #[command(subcommand)]
    command: SchemasCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = cli.command.run(&cli.schemas);
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
