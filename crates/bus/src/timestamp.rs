//! [`TimestampMillis`]: an instant as Avro's `timestamp-millis` logical type.
//!
//! Derive [`apache_avro::AvroSchema`] on an event with a `TimestampMillis` field and the
//! derived schema says `{"type": "long", "logicalType": "timestamp-millis"}`, so
//! [`crate::event::check_schema`] holds the Rust type to the `.avsc`; on the wire it is
//! the `long` of milliseconds since the Unix epoch (UTC), which Java reads as an
//! `Instant` and fastavro as a timezone-aware `datetime`.

use std::fmt;

use apache_avro::schema::derive::AvroSchemaComponent;
use apache_avro::schema::{Name, Namespace, Schema};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant with millisecond precision, encoded as Avro `timestamp-millis`.
///
/// ```
/// use herald_bus::timestamp::TimestampMillis;
/// let at = TimestampMillis::from_millis(1_764_547_200_123).expect("in range");
/// assert_eq!(at.to_string(), "2025-12-01T00:00:00.123Z");
/// assert_eq!(at.as_millis(), 1_764_547_200_123);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimestampMillis(DateTime<Utc>);

impl TimestampMillis {
    /// Now, truncated to the millisecond.
    pub fn now() -> Self {
        Self::from(Utc::now())
    }

    /// The instant `millis` milliseconds after the Unix epoch; `None` outside chrono's
    /// range (about ±262,000 years).
    pub fn from_millis(millis: i64) -> Option<Self> {
        DateTime::from_timestamp_millis(millis).map(TimestampMillis)
    }

    /// Milliseconds since the Unix epoch: the value on the wire.
    pub fn as_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    /// The instant as a chrono `DateTime`.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for TimestampMillis {
    /// Truncates to the millisecond, the precision the wire keeps, so a value compares
    /// equal to itself after a round trip.
    fn from(at: DateTime<Utc>) -> Self {
        // In range: the millisecond count of a valid DateTime is a valid DateTime.
        Self::from_millis(at.timestamp_millis()).unwrap_or(TimestampMillis(at))
    }
}

impl From<TimestampMillis> for DateTime<Utc> {
    fn from(at: TimestampMillis) -> Self {
        at.0
    }
}

impl fmt::Display for TimestampMillis {
    /// RFC 3339 with milliseconds and `Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl fmt::Debug for TimestampMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimestampMillis({self})")
    }
}

impl Serialize for TimestampMillis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.as_millis())
    }
}

impl<'de> Deserialize<'de> for TimestampMillis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let millis = i64::deserialize(deserializer)?;
        Self::from_millis(millis).ok_or_else(|| serde::de::Error::custom(format!("timestamp-millis {millis} is out of range")))
    }
}

impl AvroSchemaComponent for TimestampMillis {
    fn get_schema_in_ctxt(_: &mut std::collections::HashMap<Name, Schema>, _: &Namespace) -> Schema {
        Schema::TimestampMillis
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_both_decoders_as_a_logical_long() {
        let schema = Schema::parse_str(r#"{"type": "long", "logicalType": "timestamp-millis"}"#).expect("valid");
        let at = TimestampMillis::from(DateTime::parse_from_rfc3339("2026-03-01T12:34:56.789999Z").expect("time").with_timezone(&Utc));
        assert_eq!(at.as_millis(), 1_772_368_496_789, "truncated to the millisecond");
        let datum = apache_avro::to_avro_datum(&schema, apache_avro::to_value(at).expect("value")).expect("encodes");
        let value = apache_avro::from_avro_datum(&schema, &mut datum.as_slice(), None).expect("decodes");
        assert_eq!(value, apache_avro::types::Value::TimestampMillis(at.as_millis()));
        assert_eq!(apache_avro::from_value::<TimestampMillis>(&value).expect("from value"), at);
        let fast: serde_avro_fast::Schema = r#"{"type": "long", "logicalType": "timestamp-millis"}"#.parse().expect("fast schema");
        assert_eq!(serde_avro_fast::from_datum_slice::<TimestampMillis>(&datum, &fast).expect("fast"), at);
        assert!(apache_avro::from_value::<TimestampMillis>(&apache_avro::types::Value::Long(i64::MAX)).is_err(), "out of range");
    }
}
