//! [`MetadataError`]: a malformed CloudEvents attribute.

/// A malformed CloudEvents attribute.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// `ce_id` is present but empty (CloudEvents requires a non-empty id).
    #[error("ce_id header is empty")]
    EmptyId,
    /// `ce_id` is present but not UTF-8 text (a CloudEvents id is a string). Its bytes, in
    /// hex.
    #[error("ce_id header is not UTF-8 text (a CloudEvents id is a string): bytes {0}")]
    IdNotText(String),
    /// `ce_time` is present but is not RFC 3339.
    #[error("ce_time header is not an RFC 3339 time: {0:?}")]
    Time(String),
    /// `ce_type` names another event than the payload's schema.
    #[error("ce_type header {header:?} is not the payload's event type {payload} (the Avro full name of its schema)")]
    TypeMismatch {
        /// The header's value.
        header: String,
        /// The full name of the payload's writer schema.
        payload: String,
    },
}
