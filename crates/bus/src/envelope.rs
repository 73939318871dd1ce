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

use std::borrow::Cow;

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
            correlation_id: Some(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).to_owned()),
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
        let mut id = Uuid::encode_buffer();
        let id = self.id.hyphenated().encode_lower(&mut id);
        let mut time = [0u8; HERALD_TIME_LEN];
        let time = write_herald_time(&self.time, &mut time).map_or_else(|| Cow::Owned(self.time.to_rfc3339_opts(SecondsFormat::Micros, true)), Cow::Borrowed);
        let mut headers = OwnedHeaders::new_with_capacity(11)
            .insert(kv(header::SPECVERSION, "1.0"))
            .insert(kv(header::ID, id))
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
        let pairs = headers.into_iter().flat_map(|h| h.iter()).map(|h| (h.key.as_bytes(), h.value));
        Self::from_header_pairs(pairs, key, fallback_type)
    }

    /// [`Metadata::from_headers`] over (name, value) pairs. Only the values of known
    /// headers are checked for UTF-8 (an invalid one is ignored, as if absent); when a
    /// header repeats, the last one wins. Each attribute is allocated once.
    pub(crate) fn from_header_pairs<'a>(
        pairs: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        key: Option<&[u8]>,
        fallback_type: &str,
    ) -> Result<Self, MetadataError> {
        use header_bytes as h;
        let (mut event_type, mut source, mut subject) = (None, None, None);
        let (mut correlation_id, mut causation_id, mut tracestate) = (None, None, None);
        let (mut id, mut time, mut trace) = (Uuid::nil(), DateTime::<Utc>::UNIX_EPOCH, None);
        for (name, value) in pairs {
            if !matches!(name, h::ID | h::TYPE | h::SOURCE | h::TIME | h::SUBJECT | h::CORRELATION_ID | h::CAUSATION_ID | h::TRACEPARENT | h::TRACESTATE) {
                continue;
            }
            let Some(value) = value.and_then(|v| std::str::from_utf8(v).ok()) else { continue };
            match name {
                h::ID => id = Uuid::parse_str(value).map_err(|_| MetadataError::Id(value.to_owned()))?,
                h::TIME => time = parse_time(value).ok_or_else(|| MetadataError::Time(value.to_owned()))?,
                h::TRACEPARENT => trace = value.parse().ok(),
                h::TYPE => event_type = Some(value),
                h::SOURCE => source = Some(value),
                h::SUBJECT => subject = Some(value),
                h::CORRELATION_ID => correlation_id = Some(value),
                h::CAUSATION_ID => causation_id = Some(value),
                _ => tracestate = Some(value),
            }
        }
        Ok(Metadata {
            id,
            event_type: event_type.unwrap_or(fallback_type).to_owned(),
            source: source.unwrap_or_default().to_owned(),
            time,
            subject: match subject {
                Some(s) => s.to_owned(),
                None => key.map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            },
            correlation_id: correlation_id.map(str::to_owned),
            causation_id: causation_id.map(str::to_owned),
            trace,
            tracestate: tracestate.map(str::to_owned),
        })
    }
}

/// The header names as bytes, for matching.
mod header_bytes {
    use super::header;
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

/// Parses an RFC 3339 time: the form Herald writes directly, any other through chrono.
fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    parse_herald_time(value).or_else(|| DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc)))
}

/// Reads `2024-05-01T12:34:56.123456Z` (UTC, microseconds: what `to_headers` writes)
/// without chrono's general parser. Anything else, leap seconds included, gives `None`.
fn parse_herald_time(value: &str) -> Option<DateTime<Utc>> {
    fn digits(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    }
    let b = value.as_bytes();
    let shape = b.len() == 27 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'.' && b[26] == b'Z';
    if !shape {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
    let (h, m, s, us) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?, digits(&b[20..26])?);
    if s >= 60 {
        return None;
    }
    Some(date.and_hms_micro_opt(h, m, s, us)?.and_utc())
}

/// Length of `2024-05-01T12:34:56.123456Z`.
const HERALD_TIME_LEN: usize = 27;

/// Writes `time` as `2024-05-01T12:34:56.123456Z` (RFC 3339, UTC, microseconds: what
/// chrono's `to_rfc3339_opts(SecondsFormat::Micros, true)` writes) into `out`, without
/// allocating. `None` for years outside 0..=9999 and leap seconds (chrono writes those).
fn write_herald_time<'a>(time: &DateTime<Utc>, out: &'a mut [u8; HERALD_TIME_LEN]) -> Option<&'a str> {
    use chrono::{Datelike, Timelike};
    fn put(out: &mut [u8], value: u32) {
        let mut v = value;
        for d in out.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let year = u32::try_from(time.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None; // A leap second.
    }
    *out = *b"0000-00-00T00:00:00.000000Z";
    put(&mut out[0..4], year);
    put(&mut out[5..7], time.month());
    put(&mut out[8..10], time.day());
    put(&mut out[11..13], time.hour());
    put(&mut out[14..16], time.minute());
    put(&mut out[17..19], time.second());
    put(&mut out[20..26], nanos / 1000);
    std::str::from_utf8(out).ok()
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
    fn herald_times_parse_like_chrono() {
        for t in ["2024-05-01T12:34:56.123456Z", "1999-12-31T23:59:59.999999Z", "2024-02-29T00:00:00.000000Z", "2024-05-01T12:34:56Z", "2024-05-01T14:34:56.5+02:00", "2016-12-31T23:59:60.000000Z"] {
            let chrono = DateTime::parse_from_rfc3339(t).expect(t).with_timezone(&Utc);
            assert_eq!(parse_time(t), Some(chrono), "{t}");
        }
        for t in ["2024-02-30T00:00:00.000000Z", "2024-05-01T24:00:00.000000Z", "2024-05-01T12:34:56.12345xZ", "yesterday"] {
            assert_eq!(parse_time(t), None, "{t}");
        }
    }

    #[test]
    fn herald_times_are_written_like_chrono() {
        let times = ["2024-05-01T12:34:56.123456789Z", "1999-12-31T23:59:59.999999999Z", "2024-02-29T00:00:00Z", "0001-01-01T00:00:00.000001Z", "9999-12-31T23:59:59.5Z"];
        for t in times.iter().map(|t| DateTime::parse_from_rfc3339(t).expect(t).with_timezone(&Utc)) {
            let mut out = [0u8; HERALD_TIME_LEN];
            assert_eq!(write_herald_time(&t, &mut out), Some(t.to_rfc3339_opts(SecondsFormat::Micros, true).as_str()), "{t:?}");
        }
        let leap = DateTime::parse_from_rfc3339("2016-12-31T23:59:60.25Z").expect("leap second").with_timezone(&Utc);
        assert_eq!(write_herald_time(&leap, &mut [0u8; HERALD_TIME_LEN]), None);
        let far = chrono::NaiveDate::from_ymd_opt(12_000, 1, 1).expect("date").and_hms_opt(0, 0, 0).expect("time").and_utc();
        assert_eq!(write_herald_time(&far, &mut [0u8; HERALD_TIME_LEN]), None);
    }

    #[test]
    fn subject_falls_back_to_the_key_and_unknown_headers_are_ignored() {
        let owned = OwnedHeaders::new().insert(kv("other", "x")).insert(Header { key: "ce_source", value: Some(&[0xff_u8][..]) });
        let meta = Metadata::from_headers(Some(owned.as_borrowed()), Some(b"order-9"), "t").expect("valid");
        assert_eq!((meta.subject.as_str(), meta.source.as_str(), meta.event_type.as_str()), ("order-9", "", "t"));
    }

    #[test]
    fn malformed_id_is_an_error() {
        let owned = OwnedHeaders::new().insert(kv(header::ID, "not-a-uuid"));
        let err = Metadata::from_headers(Some(owned.as_borrowed()), None, "x");
        assert!(matches!(err, Err(MetadataError::Id(_))));
    }
}
