//! [`Record`]: one record ready to send, null key and null value included.

use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};

use super::PublishError;
use crate::schema::KnownSchema;

/// One record ready to send: what [`Publisher::send_record`](super::Publisher::send_record)
/// takes.
///
/// Key and value are optional because Kafka's are: a null key is routed by the
/// partitioner's rule for keyless records (not by hashing zero bytes, which lands on a
/// fixed partition), and a null value is a tombstone on a compacted topic (an empty value
/// is not). Herald keeps `None` as `None` everywhere a record is copied: dead-lettering
/// and `herald dlq replay` included.
///
/// ```
/// use herald_bus::publisher::Record;
/// use rdkafka::message::OwnedHeaders;
/// let put = Record::new("shop.carts", "cart-1", b"...".to_vec(), OwnedHeaders::new());
/// assert_eq!(put.key.as_deref(), Some(&b"cart-1"[..]));
/// let tombstone = Record { payload: None, ..put };
/// assert!(tombstone.payload.is_none());
/// ```
#[derive(Debug, Clone)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Kafka key (the aggregate id as UTF-8 bytes); `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Framed payload; `None` for a null value (a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers.
    pub headers: OwnedHeaders,
    /// The partition to write to; `None` (the usual) lets the partitioner pick by key.
    pub partition: Option<i32>,
}

impl Record {
    /// A record with a key and a value.
    pub fn new(topic: impl Into<String>, key: impl Into<Vec<u8>>, payload: Vec<u8>, headers: OwnedHeaders) -> Self {
        Record { topic: topic.into(), key: Some(key.into()), payload: Some(payload), headers, partition: None }
    }

    /// The record written to `partition` rather than where the partitioner puts its key:
    /// for records that must share a partition (and its order) with a key they do not
    /// have.
    ///
    /// ```
    /// use herald_bus::publisher::Record;
    /// let claim = Record::new("t", "k.claim", b"{}".to_vec(), Default::default()).to_partition(2);
    /// assert_eq!(claim.partition, Some(2));
    /// ```
    #[must_use]
    pub fn to_partition(self, partition: i32) -> Self {
        Record { partition: Some(partition), ..self }
    }

    /// The record that sends `msg` again to its topic: same key, value and headers, nulls
    /// kept null (for example a record a failed send handed back in a [`PublishError`]).
    pub fn from_message<M: Message>(msg: &M) -> Self
    where
        M::Headers: crate::headers::HeaderList,
    {
        let headers = crate::headers::build(msg.headers().into_iter().flat_map(crate::headers::pairs));
        Record { topic: msg.topic().to_owned(), key: msg.key().map(<[u8]>::to_vec), payload: msg.payload().map(<[u8]>::to_vec), headers, partition: None }
    }

    /// Bytes the broker counts against `message.max.bytes`, roughly: key, value, headers
    /// (not the batch's framing).
    ///
    /// ```
    /// use herald_bus::publisher::Record;
    ///
    /// let record = Record { topic: "t".into(), key: Some(b"k".to_vec()), payload: Some(vec![0; 100]), headers: Default::default(), partition: None };
    /// assert_eq!(record.size(), 101);
    /// ```
    pub fn size(&self) -> usize {
        let headers: usize = crate::headers::pairs(&self.headers).map(|(name, value)| name.len() + value.map_or(0, <[u8]>::len) + 8).sum();
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len) + headers
    }
}

/// The record as the client hands back an unsent one: an [`OwnedMessage`] without a
/// position.
pub(crate) fn owned_message(topic: &str, key: Option<&[u8]>, payload: Option<&[u8]>, headers: Option<OwnedHeaders>) -> OwnedMessage {
    OwnedMessage::new(payload.map(<[u8]>::to_vec), key.map(<[u8]>::to_vec), topic.to_owned(), rdkafka::Timestamp::NotAvailable, -1, -1, headers)
}

/// Encodes `event` as an Avro binary datum with `schema`, appending to `out` (see
/// [`write_datum`]).
pub fn encode_datum<E: serde::Serialize>(schema: &KnownSchema, event: &E, out: &mut Vec<u8>) -> Result<(), PublishError> {
    write_datum(&schema.schema, event, out).map_err(|e| PublishError::Encode { event_type: schema.name.clone(), reason: e.to_string() })
}

/// Writes `value` as an Avro binary datum of `schema`, appending to `out`.
///
/// apache-avro's schema-aware serializer writes straight from the Rust value; it cannot
/// follow a reference to a named type defined elsewhere in the schema (a record used for
/// two fields: the second use is a reference), so such a value, or any the serializer
/// refuses, is written by apache-avro's `Value` path (to a value, resolved against the
/// schema with its named types, validated, encoded). On an error `out` is as it was.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Address { city: String }
/// #[derive(serde::Serialize)]
/// struct Moved { from: Address, to: Address }
/// let schema = apache_avro::Schema::parse_str(r#"{"type": "record", "name": "Moved", "fields": [
///     {"name": "from", "type": {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]}},
///     {"name": "to", "type": "Address"}]}"#).unwrap();
/// let mut out = Vec::new();
/// herald_bus::publisher::write_datum(&schema, &Moved { from: Address { city: "A".into() }, to: Address { city: "B".into() } }, &mut out).unwrap();
/// assert_eq!(out, [2, b'A', 2, b'B']);
/// ```
pub fn write_datum<T: serde::Serialize>(schema: &apache_avro::Schema, value: &T, out: &mut Vec<u8>) -> Result<(), apache_avro::Error> {
    let start = out.len();
    if apache_avro::write_avro_datum_ref(schema, value, out).is_ok() {
        return Ok(());
    }
    out.truncate(start);
    out.extend(datum_by_value(schema, value)?);
    Ok(())
}

/// `value`'s datum by apache-avro's `Value` path (to a value, resolved against `schema`
/// with its named types, validated, encoded): what [`write_datum`] falls back to, and
/// what its output is compared with in tests.
///
/// ```
/// assert_eq!(herald_bus::publisher::datum_by_value(&apache_avro::Schema::Long, &1i64).unwrap(), [2]);
/// ```
pub fn datum_by_value<T: serde::Serialize>(schema: &apache_avro::Schema, value: &T) -> Result<Vec<u8>, apache_avro::Error> {
    let resolved = apache_avro::to_value(value)?.resolve(schema)?;
    apache_avro::to_avro_datum(schema, resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn from_message_keeps_nulls_null() {
        let tombstone = owned_message("t", None, None, None);
        let record = Record::from_message(&tombstone);
        assert_eq!((record.key, record.payload, record.headers.count()), (None, None, 0));
        let empty = owned_message("t", Some(b""), Some(b""), None);
        let record = Record::from_message(&empty);
        assert_eq!((record.key, record.payload), (Some(Vec::new()), Some(Vec::new())));
    }

    #[derive(serde::Serialize)]
    struct Address {
        city: String,
    }

    #[derive(serde::Serialize)]
    struct Moved {
        from: Address,
        to: Address,
    }

    #[test]
    fn an_event_using_a_named_type_twice_encodes() {
        let mut set = crate::schema::SchemaSet::default();
        let known = set
            .add_str(
                r#"{"type":"record","name":"Moved","namespace":"t","fields":[
                {"name":"from","type":{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}},
                {"name":"to","type":"Address"}]}"#,
            )
            .expect("schema");
        let mut out = vec![9];
        encode_datum(&known, &Moved { from: Address { city: "A".into() }, to: Address { city: "B".into() } }, &mut out).expect("encodes");
        assert_eq!(out, [9, 2, b'A', 2, b'B']);
    }
}
