//! [`MetadataError`]: a malformed CloudEvents attribute.

/// A malformed CloudEvents attribute.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// `ce_id` is present but empty (CloudEvents requires a non-empty id).
    #[error("ce_id header is empty")]
    EmptyId,
    /// `ce_time` is present but is not RFC 3339.
    #[error("ce_time header is not an RFC 3339 time: {0:?}")]
    Time(String),
}
