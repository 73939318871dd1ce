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
}
