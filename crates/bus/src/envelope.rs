//! Event metadata and its mapping to Kafka headers (CloudEvents Kafka binding, binary mode).
//!
//! | header            | meaning                                               |
//! |-------------------|-------------------------------------------------------|
//! | `ce_specversion`  | `1.0`                                                 |
//! | `ce_id`           | event id, a UUIDv7 (unique, time ordered)             |
//! | `ce_type`         | the Avro full name of the event                       |
//! | `ce_source`       | the producing service (a URI reference)               |
//! | `ce_time`         | RFC 3339 time of the event                            |
//! | `ce_subject`      | the aggregate id (also the Kafka key)                 |
//! | `content-type`    | `application/avro` (single-object framed datum)        |
//! | `ce_correlationid`| id shared by every event of one business flow         |
//! | `ce_causationid`  | `ce_id` of the event that caused this one             |
//! | `traceparent`     | W3C trace context, when the publisher is in a trace   |
//! | `tracestate`      | W3C trace state, passed along unchanged               |

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use uuid::Uuid;

use crate::trace::TraceContext;

/// The `content-type` Herald writes for single-object framed Avro payloads.
pub const AVRO_CONTENT_TYPE: &str = "application/avro";

/// Header names, in one place.
pub mod header {
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
}

/// The metadata of one event: its CloudEvents attributes plus flow and trace ids.
///
/// ```
/// use herald_bus::Metadata;
/// let first = Metadata::new("shop.orders.OrderPlaced", "/shop/checkout", "order-1");
/// let next = Metadata::new("shop.orders.OrderConfirmed", "/shop/payments", "order-1").caused_by(&first);
/// assert_eq!(next.causation_id.as_deref(), Some(first.id.to_string().as_str()));
/// assert_eq!(next.correlation_id, first.correlation_id);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// Unique event id (`ce_id`), a UUIDv7 for events Herald creates.
    pub id: Uuid,
    /// Event type (`ce_type`): the Avro full name.
    pub event_type: String,
    /// Producing service (`ce_source`).
    pub source: String,
    /// When the event happened (`ce_time`).
    pub time: DateTime<Utc>,
    /// Aggregate id (`ce_subject`), also the Kafka key.
    pub subject: String,
    /// Correlation id shared by a whole flow; a new flow starts with its first event's id.
    pub correlation_id: Option<String>,
    /// Id of the event that caused this one.
    pub causation_id: Option<String>,
    /// W3C trace context of the publisher.
    pub trace: Option<TraceContext>,
    /// W3C `tracestate`, passed along unchanged.
    pub tracestate: Option<String>,
}

impl Metadata {
    /// Fresh metadata for a new event: a new UUIDv7 id, the current time, and a new
    /// correlation id equal to the event id (this event starts a flow).
    pub fn new(event_type: impl Into<String>, source: impl Into<String>, subject: impl Into<String>) -> Self {
        let id = Uuid::now_v7();
        Metadata {
            id,
            event_type: event_type.into(),
            source: source.into(),
            time: Utc::now(),
            subject: subject.into(),
            correlation_id: Some(id.to_string()),
            causation_id: None,
            trace: None,
            tracestate: None,
        }
    }

    /// Marks this event as caused by `cause`: same correlation id, causation id = cause's id,
    /// and a child of its trace.
    pub fn caused_by(mut self, cause: &Metadata) -> Self {
        self.correlation_id = cause.correlation_id.clone().or_else(|| Some(cause.id.to_string()));
        self.causation_id = Some(cause.id.to_string());
        self.trace = cause.trace.map(|t| t.child());
        self.tracestate = cause.tracestate.clone();
        self
    }

    /// Writes the metadata as Kafka headers.
    pub fn to_headers(&self) -> OwnedHeaders {
        let id = self.id.to_string();
        let time = self.time.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut headers = OwnedHeaders::new_with_capacity(11)
            .insert(kv(header::SPECVERSION, "1.0"))
            .insert(kv(header::ID, &id))
            .insert(kv(header::TYPE, &self.event_type))
            .insert(kv(header::SOURCE, &self.source))
            .insert(kv(header::TIME, &time))
            .insert(kv(header::SUBJECT, &self.subject))
            .insert(kv(header::CONTENT_TYPE, AVRO_CONTENT_TYPE));
        if let Some(c) = &self.correlation_id {
            headers = headers.insert(kv(header::CORRELATION_ID, c));
        }
        if let Some(c) = &self.causation_id {
            headers = headers.insert(kv(header::CAUSATION_ID, c));
        }
        if let Some(t) = &self.trace {
            headers = headers.insert(kv(header::TRACEPARENT, &t.to_string()));
        }
        if let Some(t) = &self.tracestate {
            headers = headers.insert(kv(header::TRACESTATE, t));
        }
        headers
    }

    /// Reads metadata from Kafka headers. Missing attributes are filled as well as possible
    /// (`event_type` from `fallback_type`, `subject` from the key); a present but malformed
    /// `ce_id` or `ce_time` is an error.
    pub fn from_headers<H: Headers>(headers: Option<&H>, key: Option<&[u8]>, fallback_type: &str) -> Result<Self, MetadataError> {
        let mut meta = Metadata {
            id: Uuid::nil(),
            event_type: fallback_type.to_owned(),
            source: String::new(),
            time: DateTime::<Utc>::UNIX_EPOCH,
            subject: key.map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            correlation_id: None,
            causation_id: None,
            trace: None,
            tracestate: None,
        };
        let Some(headers) = headers else { return Ok(meta) };
        for h in headers.iter() {
            let Some(value) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else { continue };
            match h.key {
                header::ID => meta.id = Uuid::parse_str(value).map_err(|_| MetadataError::Id(value.to_owned()))?,
                header::TYPE => meta.event_type = value.to_owned(),
                header::SOURCE => meta.source = value.to_owned(),
                header::TIME => {
                    meta.time = DateTime::parse_from_rfc3339(value)
                        .map_err(|_| MetadataError::Time(value.to_owned()))?
                        .with_timezone(&Utc)
                }
                header::SUBJECT => meta.subject = value.to_owned(),
                header::CORRELATION_ID => meta.correlation_id = Some(value.to_owned()),
                header::CAUSATION_ID => meta.causation_id = Some(value.to_owned()),
                header::TRACEPARENT => meta.trace = value.parse().ok(),
                header::TRACESTATE => meta.tracestate = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(meta)
    }
}

/// A malformed CloudEvents attribute.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// `ce_id` is present but is not a UUID.
    #[error("ce_id header is not a UUID: {0:?}")]
    Id(String),
    /// `ce_time` is present but is not RFC 3339.
    #[error("ce_time header is not an RFC 3339 time: {0:?}")]
    Time(String),
}

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

fn kv<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header { key, value: Some(value) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::BorrowedHeaders;

    #[test]
    fn headers_round_trip() {
        let mut meta = Metadata::new("shop.orders.OrderPlaced", "/shop/checkout", "order-7");
        meta.trace = Some(TraceContext::new_root());
        meta.tracestate = Some("vendor=1".into());
        let cause = meta.clone();
        let meta = Metadata::new("shop.orders.OrderConfirmed", "/shop/payments", "order-7").caused_by(&cause);
        let owned = meta.to_headers();
        let borrowed: &BorrowedHeaders = owned.as_borrowed();
        let back = Metadata::from_headers(Some(borrowed), Some(b"order-7"), "x").expect("valid");
        // Times are written with microsecond precision.
        assert_eq!(back.time.timestamp_micros(), meta.time.timestamp_micros());
        assert_eq!(Metadata { time: meta.time, ..back }, meta);
    }

    #[test]
    fn malformed_id_is_an_error() {
        let owned = OwnedHeaders::new().insert(kv(header::ID, "not-a-uuid"));
        let err = Metadata::from_headers(Some(owned.as_borrowed()), None, "x");
        assert!(matches!(err, Err(MetadataError::Id(_))));
    }
}
