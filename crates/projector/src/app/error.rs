//! Why a projection program failed.

use crate::store::StoreError;
use crate::ProjectorError;

/// A projection program failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// A flag's value is malformed.
    #[error("{0}")]
    Usage(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The projector, rebuild or rollback failed.
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The HTTP server could not bind or failed.
    #[error("http: {0}")]
    Http(#[from] std::io::Error),
    /// A rebuild or time travel was stopped (SIGINT, SIGTERM) before its stop point.
    #[error("interrupted: version {version} holds only the first {events} events (partial, not swapped in); run it again to build a new version")]
    Interrupted {
        /// The partial version.
        version: u32,
        /// Events it holds.
        events: u64,
    },
}

/// What a projection program's `main` returns for `result`: success, or the error printed
/// as a sentence (`error: ...`, with its causes) on stderr and exit status 1. (A `main`
/// that returns the `Result` itself prints the error's debug form.)
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     # fn run() -> Result<(), herald_projector::app::AppError> { Ok(()) }
///     herald_projector::app::exit(run())
/// }
/// ```
pub fn exit(result: Result<(), AppError>) -> std::process::ExitCode {
    let Err(e) = result else { return std::process::ExitCode::SUCCESS };
    let mut message = format!("error: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(&format!(": {text}"));
        }
        cause = c.source();
    }
    eprintln!("{message}");
    std::process::ExitCode::FAILURE
}
