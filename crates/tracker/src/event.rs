//! [`TrackedEvent`]: one event of a saga as the tracker records it.

use chrono::{DateTime, Utc};
use herald_bus::{Metadata, Position};
use serde::{Deserialize, Serialize};

/// One event of a saga: its CloudEvents attributes and where it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedEvent {
    /// Event id (`ce_id`).
    pub event_id: String,
    /// The saga: the correlation id (`ce_correlationid`; an event without one starts its
    /// own saga, its id).
    pub correlation_id: String,
    /// The id of the event that caused it (`ce_causationid`).
    pub causation_id: Option<String>,
    /// Event type (`ce_type`).
    pub event_type: String,
    /// Producing service (`ce_source`).
    pub source: String,
    /// Aggregate id (`ce_subject`): the order id in the shop's saga.
    pub subject: String,
    /// When it happened (`ce_time`).
    #[serde(with = "crate::event::rfc3339")]
    pub time: DateTime<Utc>,
    /// Topic it was read from.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl TrackedEvent {
    /// The event of a consumed envelope.
    ///
    /// ```
    /// use herald_bus::{Metadata, Position};
    /// let meta = Metadata::new("shop.orders.OrderPlaced", "/shop/checkout", "order-1");
    /// let e = herald_tracker::TrackedEvent::from_parts(&meta, &Position { topic: "shop.orders".into(), partition: 2, offset: 7 });
    /// assert_eq!(e.correlation_id, meta.id.to_string());
    /// assert_eq!((e.partition, e.offset, e.subject.as_str()), (2, 7, "order-1"));
    /// ```
    pub fn from_parts(meta: &Metadata, position: &Position) -> Self {
        // The id as written, as the events it caused name it (`ce_causationid`).
        let id = meta.ce_id();
        TrackedEvent {
            correlation_id: meta.correlation(),
            event_id: id,
            causation_id: meta.causation_id.clone(),
            event_type: meta.event_type.clone(),
            source: meta.source.clone(),
            subject: meta.subject.clone(),
            time: meta.time,
            topic: position.topic.clone(),
            partition: position.partition,
            offset: position.offset,
        }
    }
}

/// Serializes times as RFC 3339 with milliseconds.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};

    pub(crate) fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}
