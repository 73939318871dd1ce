//! Events a reaction emits: typed when written, erased inside the runtime.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use herald_bus::event::Member;
use herald_bus::schema::KnownSchema;
use herald_bus::{Event, EventFamily, PublishError, Topic};

/// One event a reaction emits, bound for one topic.
///
/// Built by [`Reaction::emit`](crate::Reaction::emit), which only accepts an event of the
/// topic's family (like the publisher, a mismatch does not compile). The runtime sees it
/// erased: topic, type, key, and a way to encode it.
pub struct Emitted {
    topic: String,
    type_name: &'static str,
    key: String,
    event: Box<dyn Outgoing>,
}

/// The erased event: encoding and a JSON view (for tests and diagnostics).
trait Outgoing: Send + Sync {
    fn schema(&self) -> Option<&'static Arc<KnownSchema>>;
    fn encode(&self, out: &mut Vec<u8>) -> Result<&'static Arc<KnownSchema>, PublishError>;
    fn to_json(&self) -> serde_json::Value;
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

struct Typed<F, E> {
    event: E,
    _family: PhantomData<fn() -> F>,
}

impl<F: EventFamily + Member<E>, E: Event + fmt::Debug> Outgoing for Typed<F, E> {
    fn schema(&self) -> Option<&'static Arc<KnownSchema>> {
        F::schemas().latest(E::TYPE)
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<&'static Arc<KnownSchema>, PublishError> {
        let known = self.schema().ok_or_else(|| PublishError::UnknownSchema(E::TYPE.to_owned()))?;
        herald_bus::publisher::encode_datum(known, &self.event, out)?;
        Ok(known)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.event).unwrap_or(serde_json::Value::Null)
    }

    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.event, f)
    }
}

impl Emitted {
    /// `event`, bound for `topic`; the key is the event's aggregate id.
    pub fn new<F, E>(topic: &Topic<F>, event: E) -> Self
    where
        F: EventFamily + Member<E>,
        E: Event + fmt::Debug,
    {
        Emitted { topic: topic.name().to_owned(), type_name: E::TYPE, key: event.aggregate_id().to_owned(), event: Box::new(Typed::<F, E> { event, _family: PhantomData }) }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The event's Avro full name (its CloudEvents `type`).
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The Kafka key: the event's aggregate id.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The event's schema in its topic's family (`None` if the family lacks it, which
    /// the family macro makes impossible for members).
    pub fn schema(&self) -> Option<&'static Arc<KnownSchema>> {
        self.event.schema()
    }

    /// Appends the event's Avro datum (no framing) to `out` and returns its schema; frame
    /// it with the publisher's codec (`Publisher::frame`).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<&'static Arc<KnownSchema>, PublishError> {
        self.event.encode(out)
    }

    /// The event as JSON (serde's view of the Rust value).
    pub fn to_json(&self) -> serde_json::Value {
        self.event.to_json()
    }
}

impl fmt::Debug for Emitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}: ", self.type_name, self.topic)?;
        self.event.debug(f)
    }
}
