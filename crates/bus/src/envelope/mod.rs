//! Event metadata and its mapping to Kafka headers (CloudEvents Kafka binding, binary mode),
//! and the envelope a handler receives.
//!
//! | header            | meaning                                               |
//! |-------------------|-------------------------------------------------------|
//! | `ce_specversion`  | `1.0`                                                 |
//! | `ce_id`           | event id, a UUIDv7 (unique, time ordered); read: any  |
//! | `ce_type`         | the Avro full name of the event                       |
//! | `ce_source`       | the producing service (a URI reference)               |
//! | `ce_time`         | RFC 3339 time of the event                            |
//! | `ce_subject`      | the aggregate id (also the Kafka key)                 |
//! | `content-type`    | `application/avro` (single-object framed datum)        |
//! | `ce_correlationid`| id shared by every event of one business flow         |
//! | `ce_causationid`  | `ce_id` of the event that caused this one             |
//! | `traceparent`     | W3C trace context, when the publisher is in a trace   |
//! | `tracestate`      | W3C trace state, passed along unchanged               |
//!
//! - [`Metadata`] (`metadata.rs`): the attributes, written to and read from headers.
//! - [`header`]: the header names.
//! - [`MetadataError`] (`error.rs`): a malformed attribute.
//! - `time.rs`: the RFC 3339 form Herald writes and reads without chrono's general parser.
//! - [`Envelope`] and [`Position`] (here): what a handler receives.

mod error;
pub mod header;
mod metadata;
mod time;

pub use error::MetadataError;
pub use metadata::{Metadata, ID_NAMESPACE};

/// The `content-type` Herald writes for single-object framed Avro payloads.
pub const AVRO_CONTENT_TYPE: &str = "application/avro";

/// Where a consumed event was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// A consumed event with its metadata and position: what handlers receive.
#[derive(Debug, Clone)]
pub struct Envelope<E> {
    /// The decoded event.
    pub event: E,
    /// Its CloudEvents metadata.
    pub meta: Metadata,
    /// Where it was read from.
    pub position: Position,
}
