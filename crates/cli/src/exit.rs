//! Exit codes: `1` for failures, `2` for input the user must fix ([`Invalid`]), `0` when
//! the reader of stdout went away (`herald tail ... | head`): see [`outln!`].

use std::io::Write as _;
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

/// Stdout was closed by its reader: the command stops, quietly and successfully, as
/// `head` expects of the commands it reads from.
#[derive(Debug, thiserror::Error)]
#[error("stdout closed")]
pub struct Closed;

/// Writes to stdout; a closed stdout becomes [`Closed`] (instead of `println!`'s panic).
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Closed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// `println!` for commands: returns early with [`Closed`] when stdout's reader is gone.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::exit::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}
pub(crate) use outln;

/// `print!` for commands, like [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::exit::write_stdout(format_args!($($arg)*))?
    };
}
pub(crate) use out;

/// Prints the error (with its causes) to stderr and picks the exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Closed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            if e.downcast_ref::<Invalid>().is_some() || refused_config(&e) { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// True when librdkafka refused the client's configuration (`-X` or `HERALD_RDKAFKA_*`:
/// a property it does not know, a value it does not take): input the user must fix.
fn refused_config(e: &anyhow::Error) -> bool {
    use rdkafka::error::KafkaError;
    e.chain().any(|cause| matches!(cause.downcast_ref::<KafkaError>(), Some(KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_))))
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
