//! Reading both framings from one topic, writing the configured one: how a topic moves
//! from single-object encoding to a registry, or back.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use herald_bus::codec::{Codec, DecodeError, SingleObject, SINGLE_OBJECT_MAGIC};
use herald_bus::schema::{KnownSchema, SchemaSet};
use herald_bus::PublishError;

use crate::{wire, Confluent};

/// A payload framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Avro single-object encoding (`C3 01` + fingerprint), no registry.
    #[default]
    SingleObject,
    /// Confluent wire format (`00` + schema id), with a registry.
    Confluent,
}

/// A format name that is neither `single-object` nor `confluent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payload format {0:?}: expected single-object or confluent")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "single-object" => Ok(Format::SingleObject),
            "confluent" => Ok(Format::Confluent),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// Which format each topic is written in: a default and per-topic exceptions.
///
/// ```
/// use herald_registry::{CodecConfig, Format};
/// let config = CodecConfig::new(Format::SingleObject).topic("shop.orders", Format::Confluent);
/// assert_eq!(config.format_for("shop.orders"), Format::Confluent);
/// assert_eq!(config.format_for("shop.payments"), Format::SingleObject);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecConfig {
    default: Format,
    topics: HashMap<String, Format>,
}

impl CodecConfig {
    /// Every topic written in `default`.
    pub fn new(default: Format) -> Self {
        CodecConfig { default, topics: HashMap::new() }
    }

    /// `topic` written in `format`.
    pub fn topic(mut self, topic: impl Into<String>, format: Format) -> Self {
        self.topics.insert(topic.into(), format);
        self
    }

    /// The format `topic` is written in.
    pub fn format_for(&self, topic: &str) -> Format {
        self.topics.get(topic).copied().unwrap_or(self.default)
    }
}

/// Reads single-object and Confluent payloads alike, telling them apart by the first byte
/// (`C3` single-object, `00` Confluent); writes each topic in the format its
/// [`CodecConfig`] names.
///
/// A migration to a registry: consumers switch to `Dual` first (they read both), then
/// producers switch their topics' format to [`Format::Confluent`]; records of both formats
/// on one topic are all handled, in order.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use herald_bus::{Consumer, KafkaConfig};
/// use herald_registry::{CodecConfig, Confluent, Dual, Format, Registry, RegistryConfig};
///
/// let confluent = Confluent::new(Registry::new(RegistryConfig::new("http://127.0.0.1:8081"))?);
/// let formats = CodecConfig::new(Format::SingleObject).topic("shop.orders", Format::Confluent);
/// let builder = Consumer::builder(KafkaConfig::new("127.0.0.1:9092"), "billing")
///     .codec(move |schemas| Arc::new(Dual::new(schemas, confluent.clone(), formats.clone())));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Dual {
    single: SingleObject,
    confluent: Confluent,
    formats: CodecConfig,
}

impl Dual {
    /// A codec reading with `schemas` (single-object) and `confluent` (which also prefers
    /// `schemas` to the registry's copies), writing as `formats` says.
    pub fn new(schemas: SchemaSet, confluent: Confluent, formats: CodecConfig) -> Self {
        Dual { single: SingleObject::new(schemas.clone()), confluent: confluent.with_schemas(schemas), formats }
    }

    /// The format payloads for `topic` are written in.
    pub fn format_for(&self, topic: &str) -> Format {
        self.formats.format_for(topic)
    }
}

#[async_trait]
impl Codec for Dual {
    async fn write_header(&self, topic: &str, schema: &KnownSchema, out: &mut Vec<u8>) -> Result<(), PublishError> {
        match self.formats.format_for(topic) {
            Format::SingleObject => self.single.write_header(topic, schema, out).await,
            Format::Confluent => self.confluent.write_header(topic, schema, out).await,
        }
    }

    async fn read_header<'a>(&self, payload: &'a [u8]) -> Result<(Arc<KnownSchema>, &'a [u8]), DecodeError> {
        match payload.first() {
            None => Err(DecodeError::Empty),
            Some(&b) if b == SINGLE_OBJECT_MAGIC[0] => self.single.split(payload),
            Some(&wire::MAGIC) => self.confluent.read_header(payload).await,
            Some(_) => Err(DecodeError::BadMagic {
                // BadMagic's message says which framings it is not.
                found: wire::hex_prefix(payload),
            }),
        }
    }
}
