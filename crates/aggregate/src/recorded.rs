//! [`Recorded`]: one event of an aggregate's stream as read back from the event topic;
//! [`At`]: the point a state is read as of; [`Snapshot`]: a state at a version.

use chrono::{DateTime, Utc};
use herald_bus::codec::SingleObject;
use herald_bus::EventFamily;

use crate::store::ReadError;

/// One event as read back: where it is in its aggregate's stream (`version`, from the
/// `ce_sequence` header) and in the topic (`partition`, `offset`), its CloudEvents
/// attributes, and the event itself (`E`; `Vec<u8>` for the record's payload as it is on
/// the topic, single-object framed Avro, before decoding).
///
/// ```
/// use herald_aggregate::Recorded;
/// let raw = Recorded { aggregate_id: "a-1".into(), version: 1, event_id: "e".into(), event_type: "x.Added".into(), time: chrono::Utc::now(), causation_id: None, partition: 0, offset: 7, event: vec![0xC3, 0x01] };
/// let sized = raw.map(|payload| payload.len());
/// assert_eq!((sized.version, sized.event), (1, 2));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<E> {
    /// The aggregate (the record's key and `ce_subject`).
    pub aggregate_id: String,
    /// The aggregate's version after this event (1 for its first).
    pub version: i64,
    /// `ce_id`.
    pub event_id: String,
    /// `ce_type`: the Avro full name.
    pub event_type: String,
    /// `ce_time`: when the command was decided.
    pub time: DateTime<Utc>,
    /// `ce_causationid`: the command's id.
    pub causation_id: Option<String>,
    /// The event topic's partition.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The event.
    pub event: E,
}

impl<E> Recorded<E> {
    /// The same record with its event changed by `f`.
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Recorded<F> {
        let Recorded { aggregate_id, version, event_id, event_type, time, causation_id, partition, offset, event } = self;
        Recorded { aggregate_id, version, event_id, event_type, time, causation_id, partition, offset, event: f(event) }
    }
}

impl Recorded<Vec<u8>> {
    /// Decodes the payload as a member of family `F` (its writer schema must be one `F`
    /// knows; a type that is not a member is [`ReadError::Decode`]).
    pub fn decode<F: EventFamily>(self, codec: &SingleObject) -> Result<Recorded<F>, ReadError> {
        let (partition, offset) = (self.partition, self.offset);
        let failed = |message: String| ReadError::Decode { partition, offset, message };
        let event = {
            let (writer, datum) = codec.split(&self.event).map_err(|e| failed(e.to_string()))?;
            F::decode(&writer.name, &writer, datum).map_err(|e| failed(e.to_string()))?.ok_or_else(|| failed(format!("{} is not a member of the aggregate's event family", writer.name)))?
        };
        Ok(self.map(|_| event))
    }
}

/// The point a state is read as of ([`EventStore::state_at`](crate::EventStore::state_at)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Every event there is now.
    Latest,
    /// The first `n` events (versions 1 to `n`); all of them when the stream is shorter.
    Version(i64),
    /// The events decided at or before this time: the longest prefix of the stream whose
    /// every `ce_time` is at or before it (an event after the time ends the prefix, even if
    /// a later one carries an earlier time, as a new owner with a slower clock could write),
    /// so the state is always one the aggregate really had.
    Time(DateTime<Utc>),
}

impl At {
    /// Whether `event` is beyond this point, given the events before it were not.
    pub(crate) fn excludes<E>(&self, event: &Recorded<E>) -> bool {
        match *self {
            At::Latest => false,
            At::Version(n) => event.version > n,
            At::Time(t) => event.time > t,
        }
    }
}

/// An aggregate's state as of some point: the state folded from its first `version`
/// events (`version` 0 and the default state for an aggregate without events), and the
/// time of the last of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<S> {
    /// The state.
    pub state: S,
    /// How many events were folded.
    pub version: i64,
    /// `ce_time` of the last event folded.
    pub time: Option<DateTime<Utc>>,
}

impl<S> Snapshot<S> {
    /// Whether the aggregate had any event by then.
    pub fn exists(&self) -> bool {
        self.version > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: i64, secs: i64) -> Recorded<()> {
        let time = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default();
        Recorded { aggregate_id: "a".into(), version, event_id: String::new(), event_type: String::new(), time, causation_id: None, partition: 0, offset: version, event: () }
    }

    #[test]
    fn a_point_excludes_what_comes_after_it() {
        assert!(!At::Latest.excludes(&event(99, 99)));
        assert!(!At::Version(2).excludes(&event(2, 0)));
        assert!(At::Version(2).excludes(&event(3, 0)));
        let t = DateTime::<Utc>::from_timestamp(10, 0).unwrap_or_default();
        assert!(!At::Time(t).excludes(&event(1, 10)), "an event at the time is included");
        assert!(At::Time(t).excludes(&event(1, 11)));
    }
}
