//! Header names, in one place.

/// CloudEvents spec version.
pub const SPECVERSION: &str = "ce_specversion";
/// Event id.
pub const ID: &str = "ce_id";
/// Event type (Avro full name).
pub const TYPE: &str = "ce_type";
/// Producing service.
pub const SOURCE: &str = "ce_source";
/// Event time.
pub const TIME: &str = "ce_time";
/// Aggregate id.
pub const SUBJECT: &str = "ce_subject";
/// Payload media type.
pub const CONTENT_TYPE: &str = "content-type";
/// Correlation id extension.
pub const CORRELATION_ID: &str = "ce_correlationid";
/// Causation id extension.
pub const CAUSATION_ID: &str = "ce_causationid";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// Every header [`Metadata`](crate::Metadata) reads and writes: the CloudEvents attributes
/// and the W3C trace context.
///
/// ```
/// use herald_bus::envelope::header;
/// assert!(header::ATTRIBUTES.contains(&header::ID));
/// assert!(!header::ATTRIBUTES.contains(&"ce_replyto"));
/// ```
pub const ATTRIBUTES: [&str; 11] = [SPECVERSION, ID, TYPE, SOURCE, TIME, SUBJECT, CONTENT_TYPE, CORRELATION_ID, CAUSATION_ID, TRACEPARENT, TRACESTATE];

/// The header names as bytes, for matching.
pub(crate) mod bytes {
    use super as header;
    pub const ID: &[u8] = header::ID.as_bytes();
    pub const TYPE: &[u8] = header::TYPE.as_bytes();
    pub const SOURCE: &[u8] = header::SOURCE.as_bytes();
    pub const TIME: &[u8] = header::TIME.as_bytes();
    pub const SUBJECT: &[u8] = header::SUBJECT.as_bytes();
    pub const CORRELATION_ID: &[u8] = header::CORRELATION_ID.as_bytes();
    pub const CAUSATION_ID: &[u8] = header::CAUSATION_ID.as_bytes();
    pub const TRACEPARENT: &[u8] = header::TRACEPARENT.as_bytes();
    pub const TRACESTATE: &[u8] = header::TRACESTATE.as_bytes();
}
