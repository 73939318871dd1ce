//! An event as it travels: topic, type, Avro datum and metadata.

use std::sync::Arc;

use herald_bus::event::Member;
use herald_bus::schema::KnownSchema;
use herald_bus::{Event, EventFamily, Metadata, Topic};
use serde::de::DeserializeOwned;

use crate::input::Extensions;
use crate::reactor::Emission;

/// An encoded event on a topic, with its metadata: what a participant receives.
#[derive(Debug, Clone)]
pub struct Raw {
    /// The topic's name.
    pub topic: String,
    /// The event type.
    pub type_name: String,
    /// The writer schema.
    pub schema: Arc<KnownSchema>,
    /// The Avro datum (no framing).
    pub datum: Vec<u8>,
    /// Its metadata.
    pub meta: Metadata,
    /// Its other headers (extension attributes such as `ce_replyto`; an emitted event's
    /// [extra headers](crate::emit::Emitted::with_header)).
    pub extensions: Extensions,
}

impl Raw {
    /// Encodes `event` for `topic` with `meta`. Panics if the family lacks the schema or the
    /// event does not fit it (a test failure).
    pub fn encode<F, E>(topic: &Topic<F>, event: &E, meta: Metadata) -> Self
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        let schema = F::schemas().latest(E::TYPE).unwrap_or_else(|| panic!("{} has no schema in the family of {}", E::TYPE, topic.name()));
        let mut datum = Vec::new();
        herald_bus::publisher::encode_datum(schema, event, &mut datum).unwrap_or_else(|e| panic!("{} does not fit its schema: {e}", E::TYPE));
        Raw { topic: topic.name().to_owned(), type_name: E::TYPE.to_owned(), schema: Arc::clone(schema), datum, meta, extensions: Extensions::default() }
    }

    /// Encodes an emitted event. Panics if it does not fit its schema.
    pub fn from_emission(emission: &Emission) -> Self {
        let mut datum = Vec::new();
        let schema = emission.event.encode(&mut datum).unwrap_or_else(|e| panic!("{:?} does not encode: {e}", emission.event));
        let mut extensions = Extensions::default();
        for (name, value) in emission.event.headers() {
            extensions.push(name.clone(), value.clone());
        }
        Raw { topic: emission.event.topic().to_owned(), type_name: emission.event.type_name().to_owned(), schema: Arc::clone(schema), datum, meta: emission.meta.clone(), extensions }
    }

    /// Decodes it as `E`, if it is of `E`'s type.
    pub fn decode<E: Event + DeserializeOwned>(&self) -> Option<E> {
        if self.type_name != E::TYPE {
            return None;
        }
        let value = herald_bus::codec::decode_value(&self.schema, None, &self.datum).ok()?;
        apache_avro::from_value::<E>(&value).ok()
    }
}

/// Fresh test metadata: a deterministic id from `n`, correlation = `correlation` or its id.
pub(crate) fn test_meta(n: u64, event_type: &str, subject: &str, correlation: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Metadata {
    let mut meta = Metadata::new(event_type, "/herald/testkit", subject);
    meta.id = uuid::Uuid::new_v5(&crate::ids::NAMESPACE, format!("testkit-input-{n}").as_bytes());
    meta.time = now;
    meta.correlation_id = Some(correlation.map_or_else(|| meta.id.to_string(), str::to_owned));
    meta
}
