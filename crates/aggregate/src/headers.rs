//! The Kafka headers of the wire contract beyond the CloudEvents attributes the bus writes.

/// On a command: the topic its reply goes to (a CloudEvents extension attribute).
pub const REPLY_TO: &str = "ce_replyto";

/// On a command: the aggregate version it expects (decimal); another version is a
/// [`CONFLICT`](crate::CONFLICT).
pub const EXPECTED_VERSION: &str = "ce_expectedversion";

/// On an event: the aggregate's version after it (decimal, from 1; the CloudEvents
/// `sequence` extension).
pub const SEQUENCE: &str = "ce_sequence";
