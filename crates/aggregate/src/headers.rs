//! The Kafka headers of the wire contract beyond the CloudEvents attributes the bus writes.

/// On a command: the topic its reply goes to (a CloudEvents extension attribute).
pub const REPLY_TO: &str = "ce_replyto";

/// On a command: the aggregate version it expects (decimal); another version is a
/// [`CONFLICT`](crate::CONFLICT).
pub const EXPECTED_VERSION: &str = "ce_expectedversion";

/// On an event: the aggregate's version after it, from 1, written by [`sequence`] (the
/// CloudEvents `sequence` extension).
pub const SEQUENCE: &str = "ce_sequence";

/// The [`SEQUENCE`] value of `version`: decimal, zero-padded to 19 digits (every
/// non-negative `i64`), because the CloudEvents `sequence` extension wants values that
/// order as strings ("10" sorts before "2"; "…0010" after "…0002"). Readers parse it as a
/// number, leading zeros and all.
///
/// ```
/// use herald_aggregate::headers::sequence;
/// assert_eq!(sequence(3), "0000000000000000003");
/// assert!(sequence(10) > sequence(2) && sequence(i64::MAX) > sequence(i64::MAX - 1));
/// assert_eq!(sequence(42).parse::<i64>(), Ok(42));
/// ```
pub fn sequence(version: i64) -> String {
    format!("{version:019}")
}
