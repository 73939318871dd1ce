//! The `schemas` commands, ready to mount in any clap binary.
//!
//! In `herald` (or any binary) the wiring is one variant and one call:
//!
//! ```
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(subcommand)]
//!     command: Command,
//! }
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     /// Versioned Avro schemas: list, fingerprint, check, compat.
//!     #[command(subcommand)]
//!     Schemas(herald_schema::cli::SchemasCommand),
//! }
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
//! let cli = Cli::parse_from(["herald", "schemas", "check"]);
//! let Command::Schemas(cmd) = cli.command;
//! assert_eq!(cmd.run(&dir), herald_schema::cli::exit::OK);
//! ```
//!
//! Exit codes ([`exit`]): 0 success or compatible, 1 incompatible or a failed check (stderr
//! names the field path and rule), 2 unreadable input (stderr names the file and, for
//! JSON, line and column).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::avsc::Avsc;
use crate::catalog;
use crate::mode::{self, Mode};

/// Exit codes of the `schemas` commands.
pub mod exit {
    /// Success; compatible; check passed.
    pub const OK: i32 = 0;
    /// Incompatible; check failed.
    pub const INCOMPATIBLE: i32 = 1;
    /// An input could not be read or parsed (or output could not be written).
    pub const UNREADABLE: i32 = 2;
}

/// `schemas <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum SchemasCommand {
    /// List subjects with their mode, versions and fingerprints.
    List(ListArgs),
    /// Print the CRC-64-AVRO fingerprint of a schema file (hex, single-object byte order).
    Fingerprint(FingerprintArgs),
    /// Check every schema, sample and version chain against its subject's mode.
    Check(CheckArgs),
    /// Check NEW.avsc against OLD.avsc ... (oldest first) under a mode.
    Compat(CompatArgs),
}

impl SchemasCommand {
    /// Runs the command, printing to stdout and stderr; returns the exit code.
    ///
    /// `default_dir` is the schemas folder unless the command's `--dir` says otherwise
    /// (`herald` passes its global `--schemas`).
    pub fn run(self, default_dir: &Path) -> i32 {
        let (mut out, mut err) = (io::stdout().lock(), io::stderr().lock());
        match self {
            SchemasCommand::List(args) => run_list(&args, default_dir, &mut out, &mut err),
            SchemasCommand::Fingerprint(args) => run_fingerprint(&args, &mut out, &mut err),
            SchemasCommand::Check(args) => run_check(&args, default_dir, &mut out, &mut err),
            SchemasCommand::Compat(args) => run_compat(&args, &mut out, &mut err),
        }
    }
}

/// Arguments of `schemas list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// The schemas folder (default: the global schemas folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Arguments of `schemas fingerprint`.
#[derive(Debug, Clone, clap::Args)]
pub struct FingerprintArgs {
    /// The `.avsc` file.
    pub file: PathBuf,
}

/// Arguments of `schemas check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The schemas folder (default: the global schemas folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Arguments of `schemas compat`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompatArgs {
    /// BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE.
    #[arg(long, default_value_t = Mode::Backward)]
    pub mode: Mode,
    /// OLD.avsc ... NEW.avsc: the old versions oldest first, the new one last.
    #[arg(required = true, num_args = 2.., value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `schemas list`: one line per version: subject, mode, version, fingerprint, file.
pub fn run_list(args: &ListArgs, default_dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let dir = args.dir.as_deref().unwrap_or(default_dir);
    finish((|| {
        let catalog = match catalog::Catalog::load(dir) {
            Ok(catalog) => catalog,
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok(exit::UNREADABLE);
            }
        };
        for subject in catalog.subjects() {
            let topic = subject.topic.as_deref().map(|t| format!(" (topic {t})")).unwrap_or_default();
            writeln!(out, "{} {}{topic}", subject.name, subject.mode)?;
            for v in catalog.versions(&subject.type_name) {
                writeln!(out, "  {:<4} {}  {}", v.label(), v.fingerprint(), v.path.display())?;
            }
        }
        for problem in catalog.problems() {
            writeln!(err, "{problem}")?;
        }
        Ok(exit::OK)
    })())
}

/// `schemas fingerprint FILE`: prints the fingerprint as 16 lower-case hex digits.
pub fn run_fingerprint(args: &FingerprintArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    finish(match catalog::fingerprint(&args.file) {
        Ok(fp) => writeln!(out, "{fp}").map(|()| exit::OK),
        Err(e) => writeln!(err, "error: {e}").map(|()| exit::UNREADABLE),
    })
}

/// `schemas check`: prints the [`catalog::Report`]; exit 1 when it did not pass.
pub fn run_check(args: &CheckArgs, default_dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let dir = args.dir.as_deref().unwrap_or(default_dir);
    finish((|| {
        let report = match catalog::check_all(dir) {
            Ok(report) => report,
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok(exit::UNREADABLE);
            }
        };
        if report.passed() {
            writeln!(out, "{report}")?;
            Ok(exit::OK)
        } else {
            // Violations and errors go to stderr, where scripts and CI logs look.
            writeln!(err, "{report}")?;
            Ok(exit::INCOMPATIBLE)
        }
    })())
}

/// `schemas compat --mode MODE OLD.avsc ... NEW.avsc`.
pub fn run_compat(args: &CompatArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    finish((|| {
        let mut schemas = Vec::with_capacity(args.files.len());
        for file in &args.files {
            match Avsc::load(file) {
                Ok(avsc) => schemas.push(avsc),
                Err(e) => {
                    writeln!(err, "error: {e}")?;
                    return Ok(exit::UNREADABLE);
                }
            }
        }
        let Some((new, old)) = schemas.split_last() else {
            writeln!(err, "error: give the old versions and the new one")?;
            return Ok(exit::UNREADABLE);
        };
        match mode::check(args.mode, old, new) {
            Ok(()) => {
                writeln!(out, "compatible ({}): {}", args.mode, new.label())?;
                Ok(exit::OK)
            }
            Err(violations) => {
                writeln!(err, "incompatible ({}): {}", args.mode, new.label())?;
                for v in &violations {
                    writeln!(err, "  {v} [{}]", v.violation.rule.code())?;
                }
                Ok(exit::INCOMPATIBLE)
            }
        }
    })())
}

/// Output that cannot be written (a closed pipe) ends the command with code 2.
fn finish(result: io::Result<i32>) -> i32 {
    result.unwrap_or(exit::UNREADABLE)
}
