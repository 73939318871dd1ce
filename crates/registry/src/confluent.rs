//! The Confluent codec: payloads framed with a registry schema id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_bus::codec::{Codec, DecodeError};
use herald_bus::schema::{KnownSchema, SchemaSet};
use herald_bus::PublishError;

use crate::{wire, Registry, RegistryError, SubjectStrategy};

/// The Confluent wire format (`0x00` + 4-byte big-endian schema id + Avro datum), with
/// schema ids from a [`Registry`].
///
/// Writing: the subject comes from the [`SubjectStrategy`] (record name by default); the
/// id is registered when [`Confluent::auto_register`] allows it (the default), otherwise
/// looked up, so a schema nobody registered fails to publish. Reading: the writer schema is
/// fetched by id; when a local schema (from [`Confluent::with_schemas`]) is the same
/// schema (same fingerprint, and the same logical types, which the fingerprint does not
/// cover), that one is used.
///
/// Errors: a registry that stays unavailable after the client's retries gives
/// [`PublishError::Codec`] (retryable) on publish. On consume, an unavailable registry,
/// a refused credential (401/403), 408/429 or a response that is not the registry's
/// gives the transient [`DecodeError::Unavailable`]: the consumer waits and retries (see
/// the crate docs, *Guarantees*). An unknown schema id (404) is a permanent
/// [`DecodeError`].
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
/// use herald_registry::{Confluent, Registry, RegistryConfig, SubjectStrategy};
///
/// let registry = Registry::new(RegistryConfig::new("http://127.0.0.1:8081"))?;
/// let codec = Confluent::new(registry).subject_strategy(SubjectStrategy::TopicName).auto_register(false);
/// let publisher = Publisher::with_codec(&KafkaConfig::new("127.0.0.1:9092"), PublisherOptions::new("/shop"), Arc::new(codec))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Confluent {
    registry: Registry,
    strategy: SubjectStrategy,
    auto_register: bool,
    local: SchemaSet,
    /// The writer schema chosen for each id seen (ours or the registry's), so the choice
    /// (a structural comparison) is made once per id, not per record.
    writers: Arc<Mutex<HashMap<u32, Arc<KnownSchema>>>>,
}

impl Confluent {
    /// A codec using `registry`, with the record-name strategy and auto-registration.
    pub fn new(registry: Registry) -> Self {
        Confluent { registry, strategy: SubjectStrategy::default(), auto_register: true, local: SchemaSet::default(), writers: Arc::default() }
    }

    /// The subject name strategy (default [`SubjectStrategy::RecordName`]).
    pub fn subject_strategy(mut self, strategy: SubjectStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Whether publishing registers schemas that are not registered yet (default true).
    /// With false, a schema must have been registered beforehand (by CI or an operator).
    pub fn auto_register(mut self, allowed: bool) -> Self {
        self.auto_register = allowed;
        self
    }

    /// Local schemas to prefer over the registry's copy when they are the same schema
    /// (fingerprint and logical types; the consumer passes its family's schemas to the
    /// codec factory).
    pub fn with_schemas(mut self, schemas: SchemaSet) -> Self {
        self.local = schemas;
        self.writers = Arc::default();
        self
    }

    /// The registry client.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The schema id `schema` has on `topic`: registered or looked up, cached.
    pub async fn id_for(&self, topic: &str, schema: &KnownSchema) -> Result<u32, RegistryError> {
        let subject = self.strategy.subject(topic, &schema.name);
        self.registry.id_for(&subject, schema, self.auto_register).await
    }

    /// The writer schema of a payload with schema id `id`.
    pub async fn writer(&self, id: u32) -> Result<Arc<KnownSchema>, DecodeError> {
        if let Some(chosen) = self.writers.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(chosen.clone());
        }
        let fetched = self.registry.schema(id).await.map_err(|e| decode_error(id, e))?;
        // The fingerprint alone is not enough: the parsing canonical form drops logical
        // types, so a writer's `timestamp-micros` or `decimal(10, 4)` has the fingerprint
        // of a local `timestamp-millis` or `decimal(10, 2)`, and decoding with the local
        // schema would read every value 1000 or 100 times off. apache-avro's equality
        // compares them (names, fields, logical types with precision and scale).
        let chosen = self.local.by_fingerprint(&fetched.fingerprint).filter(|local| local.schema == fetched.schema).cloned().unwrap_or(fetched);
        self.writers.lock().unwrap_or_else(|p| p.into_inner()).insert(id, chosen.clone());
        Ok(chosen)
    }
}

/// How a registry failure on the read path becomes a [`DecodeError`].
///
/// Only an answer about the record itself is permanent (the consumer dead-letters it): a
/// schema id the registry does not have (404 with Confluent's error code 40403, "schema
/// not found") and a schema that is not usable Avro. Any other 404 (a base URL that
/// misses the registry's path, such as Apicurio's `/apis/ccompat/v7`, answers 404 for
/// every id) says nothing about the record: it is unavailable, with a hint at the URL.
/// Everything else is about the consumer's access to the registry, not the record, so
/// it is [`DecodeError::Unavailable`] and the consumer waits and retries instead of
/// dead-lettering every record: an outage, 401/403/407 (a rotated or missing
/// credential), 408/429, a 2xx body that is not the registry's JSON (a proxy's HTML
/// page), or a client that cannot be set up. Other 4xx answers stay permanent.
fn decode_error(id: u32, e: RegistryError) -> DecodeError {
    if transient_on_read(&e) {
        return DecodeError::Unavailable(format!("schema id {id}: {e}"));
    }
    match &e {
        RegistryError::NotFound { code: SCHEMA_NOT_FOUND, .. } => DecodeError::UnknownSchemaId(id),
        RegistryError::NotFound { .. } => DecodeError::Unavailable(format!(
            "schema id {id}: {e}; not the registry's \"schema not found\" (error code {SCHEMA_NOT_FOUND}): is the registry URL right (its base path included)?"
        )),
        _ => DecodeError::Datum { type_name: "Confluent-framed".to_owned(), reason: format!("schema id {id}: {e}") },
    }
}

/// Confluent's error code for a schema id the registry does not have.
const SCHEMA_NOT_FOUND: i64 = 40403;

/// True when fetching a writer schema failed for a reason that may go away without the
/// record changing (see [`decode_error`]).
fn transient_on_read(e: &RegistryError) -> bool {
    match e {
        RegistryError::Unavailable { .. } | RegistryError::InvalidResponse(_) | RegistryError::Client(_) => true,
        RegistryError::Rejected { status, .. } => matches!(status, 401 | 403 | 407 | 408 | 429),
        _ => false,
    }
}

#[async_trait]
impl Codec for Confluent {
    async fn write_header(&self, topic: &str, schema: &KnownSchema, out: &mut Vec<u8>) -> Result<(), PublishError> {
        let id = self.id_for(topic, schema).await.map_err(|e| publish_error(schema, e))?;
        wire::write_header(id, out);
        Ok(())
    }

    async fn read_header<'a>(&self, payload: &'a [u8]) -> Result<(Arc<KnownSchema>, &'a [u8]), DecodeError> {
        let (id, datum) = wire::split(payload)?;
        Ok((self.writer(id).await?, datum))
    }
}

/// Transient failures stay retryable ([`PublishError::Codec`]); a schema that is not
/// registered (with auto-registration off) or that the registry refuses is not.
fn publish_error(schema: &KnownSchema, e: RegistryError) -> PublishError {
    match e {
        RegistryError::NotFound { .. } => {
            PublishError::UnknownSchema(format!("{} is not registered in the schema registry ({e})", schema.name))
        }
        RegistryError::Rejected { .. } | RegistryError::InvalidSchema { .. } => {
            PublishError::Encode { event_type: schema.name.clone(), reason: e.to_string() }
        }
        _ => PublishError::Codec(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16) -> RegistryError {
        RegistryError::Rejected { status, code: 0, message: "no".into() }
    }

    #[test]
    fn access_failures_on_read_are_transient() {
        for status in [401, 403, 407, 408, 429] {
            let err = decode_error(7, rejected(status));
            assert!(matches!(err, DecodeError::Unavailable(_)), "{status}: {err:?}");
            assert!(err.is_transient());
        }
        let html = decode_error(7, RegistryError::InvalidResponse("expected value at line 1 column 1 in <html>".into()));
        assert!(matches!(&html, DecodeError::Unavailable(r) if r.contains("schema id 7") && r.contains("<html>")), "{html:?}");
        assert!(decode_error(7, RegistryError::Client("bad".into())).is_transient());
        // A 404 that is not "schema not found": a base URL without the registry's path
        // (Apicurio answers its own 404 for every id there). Before, every record was
        // dead-lettered as an unknown schema id.
        let elsewhere = decode_error(7, RegistryError::NotFound { status: 404, code: 0, message: "RESTEASY003210: Could not find resource for full path".into() });
        assert!(matches!(&elsewhere, DecodeError::Unavailable(r) if r.contains("registry URL")), "{elsewhere:?}");
        assert!(decode_error(7, RegistryError::Unavailable { attempts: 3, reason: "503".into() }).is_transient());
    }

    #[test]
    fn answers_about_the_record_stay_permanent() {
        let missing = decode_error(7, RegistryError::NotFound { status: 404, code: 40403, message: "Schema not found".into() });
        assert!(matches!(missing, DecodeError::UnknownSchemaId(7)), "{missing:?}");
        let invalid = decode_error(7, RegistryError::InvalidSchema { id: 7, reason: "not Avro".into() });
        assert!(matches!(invalid, DecodeError::Datum { .. }), "{invalid:?}");
        assert!(!decode_error(7, rejected(422)).is_transient());
    }
}
