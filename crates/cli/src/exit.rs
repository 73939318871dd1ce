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
            eprintln!("error: {}", message(&e));
            if e.downcast_ref::<Invalid>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already contains (many errors print their source in their own message).
fn message(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let inner = std::io::Error::other("disk full");
        let e = anyhow::Error::new(inner).context("cannot write x: disk full").context("saving");
        assert_eq!(message(&e), "saving: cannot write x: disk full");
    }
}
