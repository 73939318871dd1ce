//! [`Problem`]: something wrong (or odd) in the schemas folder, with its [`Severity`].

use std::fmt;
use std::path::PathBuf;

/// Something wrong (or odd) in the schemas folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Errors fail the check; warnings do not.
    pub severity: Severity,
    /// The file concerned, if any.
    pub path: Option<PathBuf>,
    /// What is wrong.
    pub message: String,
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fails `check`.
    Error,
    /// Reported only.
    Warning,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.path {
            // Parse errors already start with their file.
            Some(path) if !self.message.starts_with(&path.display().to_string()) => {
                write!(f, "{level}: {}: {}", path.display(), self.message)
            }
            _ => write!(f, "{level}: {}", self.message),
        }
    }
}
