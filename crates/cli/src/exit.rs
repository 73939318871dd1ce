//! Exit codes: `1` for failures, `2` for input the user must fix ([`Invalid`]).

use std::process::ExitCode;

/// Input the user must fix: an unknown event type, JSON that does not fit its schema, a
/// topic that does not exist. Exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Returns early with an [`Invalid`] error built like `format!`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::from($crate::exit::Invalid(format!($($arg)*))))
    };
}
pub(crate) use invalid;

/// Prints the error (with its causes) to stderr and picks the exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Invalid>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
