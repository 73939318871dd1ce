//! [`Metadata`]: an event's CloudEvents attributes and their Kafka headers.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use uuid::Uuid;

use super::error::MetadataError;
use super::header;
use super::time::{parse_time, write_herald_time, HERALD_TIME_LEN};
use super::AVRO_CONTENT_TYPE;
use crate::headers::HeaderList;
use crate::trace::TraceContext;

/// The namespace of the name-based ids [`Metadata::id_of`] and
/// [`Metadata::identify_by_position`] give (a fixed, random UUID).
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x3f0c_8e52_7d1a_4c6b_9a40_e2b7_51d8_06fd);

/// The metadata of one event: its CloudEvents attributes plus flow and trace ids.
///
/// **Ids.** Herald's own events carry a UUIDv7 `ce_id`. CloudEvents allows any non-empty
/// string, unique per `ce_source` (the spec's example is `A234-1234-1234`, Debezium writes
/// `name:...;lsn:...;txId:...`), and plain Kafka records have no `ce_id` at all. Every
/// consumed event still gets a UUID [`id`](Metadata::id), which Herald's exactly-once
/// machinery derives output ids from, so it is stable across reads:
/// - a `ce_id` in UUID form is that UUID;
/// - any other `ce_id` maps to a name-based UUID of `ce_source` and `ce_id`
///   ([`Metadata::id_of`]), the text kept in [`original_id`](Metadata::original_id) and
///   written back unchanged;
/// - a record without `ce_id` gets an id from its place in the log (topic, partition,
///   offset: [`Metadata::identify_by_position`], which the runtimes call).
///
/// An empty `ce_id` (which CloudEvents forbids) is an error.
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
    /// Unique event id (`ce_id`), a UUIDv7 for events Herald creates (see Ids above).
    pub id: Uuid,
    /// The `ce_id` as its producer wrote it, when that is not `id` in canonical form (a
    /// non-UUID id, or a UUID in upper case or braces): written back unchanged, and named
    /// as the cause of the events it causes ([`Metadata::ce_id`]).
    pub original_id: Option<String>,
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
            original_id: None,
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
        self.correlation_id = Some(cause.correlation());
        self.causation_id = Some(cause.ce_id());
        self.trace = cause.trace.map(|t| t.child());
        self.tracestate = cause.tracestate.clone();
        self
    }

    /// The `ce_id` as written on the wire: [`original_id`](Metadata::original_id) when
    /// there is one, else `id` in canonical form.
    ///
    /// ```
    /// use herald_bus::Metadata;
    /// let pairs = [(&b"ce_id"[..], Some(&b"A234-1234-1234"[..])), (b"ce_source", Some(b"https://example.com/x"))];
    /// let meta = Metadata::from_header_pairs(pairs.into_iter(), None, "T").unwrap();
    /// assert_eq!(meta.ce_id(), "A234-1234-1234");
    /// assert_eq!(meta.id, Metadata::id_of("https://example.com/x", "A234-1234-1234"));
    /// let fresh = Metadata::new("T", "/s", "k");
    /// assert_eq!(fresh.ce_id(), fresh.id.to_string());
    /// ```
    pub fn ce_id(&self) -> String {
        self.original_id.clone().unwrap_or_else(|| self.id.to_string())
    }

    /// The flow this event belongs to: its `ce_correlationid`, or its own `ce_id` as
    /// written when it has none (it starts a flow). What the events it causes carry as
    /// their correlation id ([`caused_by`](Metadata::caused_by)).
    ///
    /// ```
    /// use herald_bus::Metadata;
    /// let first = Metadata::new("T", "/s", "k");
    /// assert_eq!(first.correlation(), first.ce_id());
    /// let next = Metadata::new("T", "/s", "k").caused_by(&first);
    /// assert_eq!(next.correlation(), first.ce_id());
    /// ```
    pub fn correlation(&self) -> String {
        self.correlation_id.clone().unwrap_or_else(|| self.ce_id())
    }

    /// The UUID of an event whose `ce_id` is not one: name-based (version 5) of its
    /// `ce_source` and `ce_id`, which CloudEvents makes unique together.
    ///
    /// ```
    /// use herald_bus::Metadata;
    /// let a = Metadata::id_of("/debezium/shop", "name:shop;lsn:29274832;txId:565");
    /// assert_eq!(a, Metadata::id_of("/debezium/shop", "name:shop;lsn:29274832;txId:565"));
    /// assert_ne!(a, Metadata::id_of("/other", "name:shop;lsn:29274832;txId:565"));
    /// assert_eq!(a.get_version_num(), 5);
    /// ```
    pub fn id_of(source: &str, ce_id: &str) -> Uuid {
        let mut name = Vec::with_capacity(6 + source.len() + 1 + ce_id.len());
        name.extend_from_slice(b"ce_id\0");
        name.extend_from_slice(source.as_bytes());
        name.push(0);
        name.extend_from_slice(ce_id.as_bytes());
        Uuid::new_v5(&ID_NAMESPACE, &name)
    }

    /// Gives an event read without a `ce_id` (its [`id`](Metadata::id) nil) the id of its
    /// place in the log: name-based (version 5) of topic, partition and offset, so every
    /// read of the record gives it the same id. An event with an id keeps it.
    ///
    /// ```
    /// use herald_bus::Metadata;
    /// let mut bare = Metadata::from_header_pairs(std::iter::empty(), Some(b"k"), "T").unwrap();
    /// assert!(bare.id.is_nil());
    /// bare.identify_by_position("shop.orders", 3, 41);
    /// let mut again = Metadata::from_header_pairs(std::iter::empty(), Some(b"k"), "T").unwrap();
    /// again.identify_by_position("shop.orders", 3, 41);
    /// assert!(!bare.id.is_nil());
    /// assert_eq!(bare.id, again.id);
    /// ```
    pub fn identify_by_position(&mut self, topic: &str, partition: i32, offset: i64) {
        if !self.id.is_nil() {
            return;
        }
        let mut name = Vec::with_capacity(6 + topic.len() + 12);
        name.extend_from_slice(b"kafka\0");
        name.extend_from_slice(topic.as_bytes());
        name.extend_from_slice(&partition.to_be_bytes());
        name.extend_from_slice(&offset.to_be_bytes());
        self.id = Uuid::new_v5(&ID_NAMESPACE, &name);
    }

    /// Writes the metadata as Kafka headers.
    pub fn to_headers(&self) -> OwnedHeaders {
        HeaderFields {
            id: self.original_id.as_deref().map_or(Id::Uuid(self.id), Id::Text),
            event_type: &self.event_type,
            source: &self.source,
            time: self.time,
            subject: &self.subject,
            correlation_id: self.correlation_id.as_deref().map(CorrelationId::Given),
            causation_id: self.causation_id.as_deref(),
            trace: self.trace,
            tracestate: self.tracestate.as_deref(),
        }
        .write()
    }

    /// The headers of [`Metadata::new`] with `trace`, written straight from borrowed parts:
    /// what `Metadata::new(event_type, source, subject)` with that trace gives through
    /// [`Metadata::to_headers`], without allocating its strings. Returns the new event id.
    pub(crate) fn fresh_headers(event_type: &str, source: &str, subject: &str, trace: Option<TraceContext>) -> (Uuid, OwnedHeaders) {
        let id = Uuid::now_v7();
        let fields = HeaderFields {
            id: Id::Uuid(id),
            event_type,
            source,
            time: Utc::now(),
            subject,
            correlation_id: Some(CorrelationId::TheId),
            causation_id: None,
            trace,
            tracestate: None,
        };
        (id, fields.write())
    }

    /// Reads metadata from Kafka headers. Missing attributes are filled as well as possible
    /// (`event_type` from `fallback_type`, `subject` from the key, `time` the epoch: a
    /// record's readers give its timestamp instead, see
    /// [`Metadata::from_record_header_pairs`]); a present but malformed `ce_id` or `ce_time`
    /// (not UTF-8 included) is an error.
    pub fn from_headers<H: HeaderList>(headers: Option<&H>, key: Option<&[u8]>, fallback_type: &str) -> Result<Self, MetadataError> {
        Self::from_header_pairs(headers.into_iter().flat_map(crate::headers::pairs), key, fallback_type)
    }

    /// [`Metadata::from_headers`] over (name, value) pairs, such as
    /// [`OwnedRecord::headers`](crate::consumer::OwnedRecord::headers). Only the values of
    /// known headers are checked for UTF-8 (an invalid one is ignored, as if absent, but
    /// for `ce_time`: an error); when a header repeats, the last one wins. Each attribute
    /// is allocated once.
    ///
    /// ```
    /// use herald_bus::Metadata;
    /// let pairs = [(&b"ce_id"[..], Some(&b"0190b2a0-0000-7000-8000-000000000001"[..])), (b"ce_type", Some(b"OrderPlaced"))];
    /// let meta = Metadata::from_header_pairs(pairs.into_iter(), Some(b"o-1"), "Unknown").unwrap();
    /// assert_eq!((meta.event_type.as_str(), meta.subject.as_str()), ("OrderPlaced", "o-1"));
    /// ```
    pub fn from_header_pairs<'a>(
        pairs: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        key: Option<&[u8]>,
        fallback_type: &str,
    ) -> Result<Self, MetadataError> {
        Self::from_record_header_pairs(pairs, key, fallback_type, None)
    }

    /// Refuses metadata whose `ce_type` is not `writer`, the full name of the payload's
    /// writer schema: the event type is the schema's name, and a record whose header says
    /// otherwise is one event to a reader that goes by the payload and another to one that
    /// goes by the header (two views of one log that disagree). Consumers dead-letter it.
    ///
    /// ```
    /// use herald_bus::Metadata;
    /// let said = [(&b"ce_type"[..], Some(&b"shop.orders.OrderCancelled"[..]))];
    /// let meta = Metadata::from_header_pairs(said.into_iter(), None, "shop.orders.OrderPlaced").unwrap();
    /// assert!(meta.check_type("shop.orders.OrderPlaced").is_err());
    /// assert!(meta.check_type("shop.orders.OrderCancelled").is_ok());
    /// ```
    pub fn check_type(&self, writer: &str) -> Result<(), MetadataError> {
        if self.event_type == writer {
            Ok(())
        } else {
            Err(MetadataError::TypeMismatch { header: self.event_type.clone(), payload: writer.to_owned() })
        }
    }

    /// [`Metadata::from_header_pairs`] of a record whose timestamp (milliseconds since the
    /// epoch: its `CreateTime`, or `LogAppendTime` if the topic says so) is
    /// `timestamp_millis`: the event's time when it has no `ce_time` (optional in
    /// CloudEvents), rather than the epoch.
    ///
    /// ```
    /// use herald_bus::Metadata;
    /// let meta = Metadata::from_record_header_pairs(std::iter::empty(), Some(b"o-1"), "T", Some(1_700_000_000_123)).unwrap();
    /// assert_eq!(meta.time.timestamp_millis(), 1_700_000_000_123);
    /// let bad = [(&b"ce_time"[..], Some(&b"\xff"[..]))];
    /// assert!(Metadata::from_record_header_pairs(bad.into_iter(), None, "T", Some(1)).is_err(), "not UTF-8: malformed, not absent");
    /// let bad_id = [(&b"ce_id"[..], Some(&b"\xff\xfe"[..]))];
    /// let refused = Metadata::from_record_header_pairs(bad_id.into_iter(), None, "T", Some(1)).unwrap_err();
    /// assert_eq!(refused.to_string(), "ce_id header is not UTF-8 text (a CloudEvents id is a string): bytes fffe");
    /// ```
    pub fn from_record_header_pairs<'a>(
        pairs: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        key: Option<&[u8]>,
        fallback_type: &str,
        timestamp_millis: Option<i64>,
    ) -> Result<Self, MetadataError> {
        use header::bytes as h;
        let (mut event_type, mut source, mut subject) = (None, None, None);
        let (mut correlation_id, mut causation_id, mut tracestate) = (None, None, None);
        let (mut ce_id, mut time, mut trace) = (None, None, None);
        for (name, value) in pairs {
            if !matches!(name, h::ID | h::TYPE | h::SOURCE | h::TIME | h::SUBJECT | h::CORRELATION_ID | h::CAUSATION_ID | h::TRACEPARENT | h::TRACESTATE) {
                continue;
            }
            let Some(value) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
                // Malformed, not absent: taken as absent, an id would be made up (every such
                // record the same one where no position is known) and a time would be the
                // record's.
                match (name, value) {
                    (h::TIME, Some(bytes)) => return Err(MetadataError::Time(String::from_utf8_lossy(bytes).into_owned())),
                    (h::ID, Some(bytes)) => return Err(MetadataError::IdNotText(bytes.iter().map(|b| format!("{b:02x}")).collect())),
                    _ => continue,
                }
            };
            match name {
                h::ID => ce_id = Some(value),
                h::TIME => time = Some(parse_time(value).ok_or_else(|| MetadataError::Time(value.to_owned()))?),
                h::TRACEPARENT => trace = value.parse().ok(),
                h::TYPE => event_type = Some(value),
                h::SOURCE => source = Some(value),
                h::SUBJECT => subject = Some(value),
                h::CORRELATION_ID => correlation_id = Some(value),
                h::CAUSATION_ID => causation_id = Some(value),
                _ => tracestate = Some(value),
            }
        }
        let (id, original_id) = match ce_id {
            None => (Uuid::nil(), None),
            Some("") => return Err(MetadataError::EmptyId),
            Some(text) => match Uuid::try_parse(text) {
                // The form Herald writes (and `Uuid`'s `Display`): nothing to keep.
                Ok(id) if text.len() == 36 && !text.bytes().any(|b| b.is_ascii_uppercase()) => (id, None),
                Ok(id) => (id, Some(text.to_owned())),
                Err(_) => (Self::id_of(source.unwrap_or_default(), text), Some(text.to_owned())),
            },
        };
        Ok(Metadata {
            id,
            original_id,
            event_type: event_type.unwrap_or(fallback_type).to_owned(),
            source: source.unwrap_or_default().to_owned(),
            time: time.or_else(|| timestamp_millis.and_then(DateTime::from_timestamp_millis)).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            subject: match subject {
                Some(s) => s.to_owned(),
                None => key.map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            },
            correlation_id: correlation_id.map(str::to_owned),
            causation_id: causation_id.map(str::to_owned),
            trace,
            // W3C Trace Context: no valid traceparent, no tracestate (it belongs to a trace).
            tracestate: tracestate.filter(|_| trace.is_some()).map(str::to_owned),
        })
    }
}

/// The correlation id to write.
#[derive(Clone, Copy)]
enum CorrelationId<'a> {
    Given(&'a str),
    /// The event's own id (a fresh event starts its flow).
    TheId,
}

/// The `ce_id` to write.
#[derive(Clone, Copy)]
enum Id<'a> {
    /// In canonical form.
    Uuid(Uuid),
    /// As its producer wrote it ([`Metadata::original_id`]).
    Text(&'a str),
}

/// Everything the headers are written from, borrowed.
struct HeaderFields<'a> {
    id: Id<'a>,
    event_type: &'a str,
    source: &'a str,
    time: DateTime<Utc>,
    subject: &'a str,
    correlation_id: Option<CorrelationId<'a>>,
    causation_id: Option<&'a str>,
    trace: Option<TraceContext>,
    tracestate: Option<&'a str>,
}

impl HeaderFields<'_> {
    fn write(&self) -> OwnedHeaders {
        let mut buffer = Uuid::encode_buffer();
        let id: &str = match self.id {
            Id::Uuid(id) => id.hyphenated().encode_lower(&mut buffer),
            Id::Text(text) => text,
        };
        let mut time = [0u8; HERALD_TIME_LEN];
        let time = write_herald_time(&self.time, &mut time).map_or_else(|| Cow::Owned(self.time.to_rfc3339_opts(SecondsFormat::Micros, true)), Cow::Borrowed);
        let mut headers = OwnedHeaders::new_with_capacity(11)
            .insert(kv(header::SPECVERSION, "1.0"))
            .insert(kv(header::ID, id))
            .insert(kv(header::TYPE, self.event_type))
            .insert(kv(header::SOURCE, self.source))
            .insert(kv(header::TIME, &time));
        // CloudEvents: a subject, when present, is non-empty. An empty one (an empty
        // aggregate id) is left out; readers take the key, empty too, in its place.
        if !self.subject.is_empty() {
            headers = headers.insert(kv(header::SUBJECT, self.subject));
        }
        headers = headers.insert(kv(header::CONTENT_TYPE, AVRO_CONTENT_TYPE));
        match self.correlation_id {
            Some(CorrelationId::Given(c)) => headers = headers.insert(kv(header::CORRELATION_ID, c)),
            Some(CorrelationId::TheId) => headers = headers.insert(kv(header::CORRELATION_ID, id)),
            None => {}
        }
        if let Some(c) = self.causation_id {
            headers = headers.insert(kv(header::CAUSATION_ID, c));
        }
        if let Some(t) = &self.trace {
            headers = headers.insert(kv(header::TRACEPARENT, &t.to_string()));
        }
        if let Some(t) = self.tracestate {
            headers = headers.insert(kv(header::TRACESTATE, t));
        }
        headers
    }
}

fn kv<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header { key, value: Some(value) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{BorrowedHeaders, Headers};

    #[test]
    fn a_tracestate_without_a_valid_traceparent_is_dropped() {
        let id = b"0190b2a0-0000-7000-8000-000000000001";
        for (parent, kept) in [(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..], true), (b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false)] {
            let pairs = [(&b"ce_id"[..], Some(&id[..])), (b"traceparent", Some(parent)), (b"tracestate", Some(b"vendor=1"))];
            let meta = Metadata::from_header_pairs(pairs.into_iter(), None, "t").expect("valid");
            assert_eq!((meta.trace.is_some(), meta.tracestate.is_some()), (kept, kept), "{}", String::from_utf8_lossy(parent));
        }
        let alone = [(&b"ce_id"[..], Some(&id[..])), (b"tracestate", Some(&b"vendor=1"[..]))];
        assert_eq!(Metadata::from_header_pairs(alone.into_iter(), None, "t").expect("valid").tracestate, None);
    }

    #[test]
    fn an_empty_subject_is_left_out_and_reads_back_empty() {
        let meta = Metadata::new("shop.orders.OrderPlaced", "/shop/checkout", "");
        let owned = meta.to_headers();
        assert!(owned.iter().all(|h| h.key != header::SUBJECT), "no empty ce_subject");
        let back = Metadata::from_headers(Some(&owned), Some(b""), "unused").expect("valid");
        assert_eq!((back.id, back.subject.as_str(), back.event_type.as_str()), (meta.id, "", "shop.orders.OrderPlaced"));
        let (_, fresh) = Metadata::fresh_headers("shop.orders.OrderPlaced", "/shop/checkout", "", None);
        assert!(fresh.iter().all(|h| h.key != header::SUBJECT), "no empty ce_subject");
    }

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
    fn fresh_headers_are_those_of_new_metadata() {
        let pairs = |h: &OwnedHeaders| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect::<Vec<_>>();
        for trace in [None, Some(TraceContext::new_root())] {
            let (id, fresh) = Metadata::fresh_headers("shop.orders.OrderPlaced", "/shop/checkout", "order-7", trace);
            let read = Metadata::from_headers(Some(fresh.as_borrowed()), None, "x").expect("valid");
            let mut expected = Metadata::new("shop.orders.OrderPlaced", "/shop/checkout", "order-7");
            expected.id = id;
            expected.correlation_id = Some(id.to_string());
            expected.time = read.time;
            expected.trace = trace;
            assert_eq!(pairs(&fresh), pairs(&expected.to_headers()));
            assert_eq!(read, expected);
        }
    }

    #[test]
    fn subject_falls_back_to_the_key_and_unknown_headers_are_ignored() {
        let owned = OwnedHeaders::new().insert(kv("other", "x")).insert(Header { key: "ce_source", value: Some(&[0xff_u8][..]) });
        let meta = Metadata::from_headers(Some(owned.as_borrowed()), Some(b"order-9"), "t").expect("valid");
        assert_eq!((meta.subject.as_str(), meta.source.as_str(), meta.event_type.as_str()), ("order-9", "", "t"));
    }

    fn read(id: &str, source: &str) -> Result<Metadata, MetadataError> {
        let owned = OwnedHeaders::new().insert(kv(header::ID, id)).insert(kv(header::SOURCE, source));
        Metadata::from_headers(Some(&owned), None, "x")
    }

    #[test]
    fn any_non_empty_ce_id_is_an_id_and_is_written_back_as_it_came() {
        let canonical = Uuid::now_v7();
        let plain = read(&canonical.to_string(), "/s").expect("a UUID");
        assert_eq!((plain.id, plain.original_id.as_deref()), (canonical, None));
        // CloudEvents' own example and Debezium's form: ids unique per source.
        for text in ["A234-1234-1234", "name:shop;lsn:29274832;txId:565"] {
            let meta = read(text, "/s").expect("CloudEvents allows any string");
            assert_eq!((meta.id, meta.original_id.as_deref()), (Metadata::id_of("/s", text), Some(text)));
            assert_eq!(meta.id, read(text, "/s").expect("again").id, "the same at every read");
            assert_ne!(meta.id, read(text, "/other").expect("another source").id, "unique per source");
            let written = meta.to_headers();
            assert_eq!(written.iter().find(|h| h.key == header::ID).and_then(|h| h.value), Some(text.as_bytes()), "written back unchanged");
            let next = Metadata::new("y", "/t", "k").caused_by(&meta);
            assert_eq!((next.causation_id.as_deref(), next.correlation_id.as_deref()), (Some(text), Some(text)));
        }
        // A UUID in another form is that UUID, its text kept.
        let upper = canonical.to_string().to_uppercase();
        let meta = read(&upper, "/s").expect("upper case");
        assert_eq!((meta.id, meta.ce_id()), (canonical, upper));
        assert!(matches!(read("", "/s"), Err(MetadataError::EmptyId)), "CloudEvents forbids an empty id");
    }

    #[test]
    fn a_record_without_ce_id_is_known_by_its_position() {
        let bare = |topic: &str, partition, offset| {
            let mut meta = Metadata::from_headers::<OwnedHeaders>(None, Some(b"k"), "x").expect("no headers");
            assert!(meta.id.is_nil());
            meta.identify_by_position(topic, partition, offset);
            meta.id
        };
        assert_eq!(bare("t", 0, 7), bare("t", 0, 7));
        let others = [bare("t", 0, 8), bare("t", 1, 7), bare("u", 0, 7)];
        assert!(others.iter().all(|id| *id != bare("t", 0, 7) && !id.is_nil()));
        let mut given = read("A234-1234-1234", "/s").expect("an id");
        let before = given.id;
        given.identify_by_position("t", 0, 7);
        assert_eq!(given.id, before, "an event with an id keeps it");
    }
}
