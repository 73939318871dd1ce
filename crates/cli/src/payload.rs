//! Payloads read in either framing: Avro single-object encoding (writer schemas from
//! `--schemas`) and, with `--schema-registry`, Confluent's wire format (writer schemas
//! fetched from the registry by id).

use std::sync::Arc;

use apache_avro::types::Value;
use herald_bus::codec::{decode_value, Codec, DecodeError, SingleObject, Split};
use herald_bus::schema::{KnownSchema, SchemaSet};
use herald_registry::{CodecConfig, Confluent, Dual, Format, Registry, RegistryConfig};

/// Reads payloads for display.
#[derive(Debug, Clone)]
pub struct Payloads {
    codec: Arc<dyn Codec>,
    registry: bool,
}

impl Payloads {
    /// Single-object payloads by `schemas`; Confluent-framed ones too when `registry` is
    /// given.
    pub fn new(schemas: SchemaSet, registry: Option<&RegistryConfig>) -> Result<Self, herald_registry::error::RegistryError> {
        let codec: Arc<dyn Codec> = match registry {
            None => Arc::new(SingleObject::new(schemas)),
            Some(config) => {
                let confluent = Confluent::new(Registry::new(config.clone())?).with_schemas(schemas.clone());
                Arc::new(Dual::new(schemas, confluent, CodecConfig::new(Format::SingleObject)))
            }
        };
        Ok(Payloads { codec, registry: registry.is_some() })
    }

    /// The writer schema and the datum of `payload`.
    pub async fn split<'a>(&self, payload: &'a [u8]) -> Result<Split<'a>, String> {
        let split = match self.codec.read_header_now(payload) {
            Some(split) => split,
            None => self.codec.read_header(payload).await,
        };
        split.map_err(|e| self.explain(payload, e))
    }

    /// `payload` decoded with its writer schema.
    pub async fn decode(&self, payload: &[u8]) -> Result<(Arc<KnownSchema>, Value), String> {
        let (writer, datum) = self.split(payload).await?;
        let value = decode_value(&writer, None, datum).map_err(|e| e.to_string())?;
        Ok((writer, value))
    }

    /// The error, with what to do about a Confluent-framed payload read without a registry.
    fn explain(&self, payload: &[u8], e: DecodeError) -> String {
        match e {
            DecodeError::BadMagic { .. } if !self.registry && payload.first() == Some(&0) => format!("{e}; pass --schema-registry URL to read it"),
            e => e.to_string(),
        }
    }
}
