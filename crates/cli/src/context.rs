//! The global options and what every command builds from them.
//!
//! Kafka properties are applied in this order, later ones winning: `--bootstrap`, then
//! `HERALD_RDKAFKA_*` environment variables ([`KafkaConfig::with_env`]), then `-X` flags.

use std::path::PathBuf;

use anyhow::Context as _;
use herald_bus::schema::SchemaSet;
use herald_bus::{KafkaConfig, Publisher, PublisherOptions};

use herald_registry::RegistryConfig;

use crate::exit::{invalid, Invalid};
use crate::payload::Payloads;

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, global = true, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Directory of Avro schemas: every `.avsc` under it is loaded, recursively.
    #[arg(long, global = true, env = "HERALD_SCHEMAS", default_value = "./schemas", value_name = "DIR")]
    pub schemas: PathBuf,
    /// A librdkafka property, as `key=value`; repeatable (`-X security.protocol=SASL_SSL`).
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
}

/// Where Confluent-framed payloads are read by: options of the commands that decode
/// payloads (`tail`, `dlq show`) only, so no other command takes a registry it would
/// ignore (`publish` writes single-object encoding).
#[derive(Debug, Default, clap::Args)]
pub struct RegistryArgs {
    /// A schema registry with Confluent's API (Confluent Schema Registry, Apicurio's
    /// `/apis/ccompat/v7`, Redpanda, Karapace), to read Confluent-framed payloads (`00` and
    /// a schema id) by; a user and password may be given in the URL
    /// (`https://KEY:SECRET@host`). Without it only single-object payloads decode.
    #[arg(long, env = "HERALD_SCHEMA_REGISTRY_URL", hide_env_values = true, value_name = "URL")]
    pub schema_registry: Option<String>,
    /// A PEM file of CA certificates to trust for an `https://` --schema-registry, besides
    /// the system's.
    #[arg(long, env = "HERALD_SCHEMA_REGISTRY_CA", hide_env_values = true, value_name = "FILE")]
    pub schema_registry_ca: Option<PathBuf>,
}

/// What commands need: the Kafka configuration and where the schemas are.
#[derive(Debug)]
pub struct Context {
    /// The Kafka configuration for Herald's publisher, consumer and admin helpers.
    pub kafka: KafkaConfig,
    schemas_dir: PathBuf,
}

impl Context {
    /// Builds the context from the global options and the process environment.
    pub fn new(args: GlobalArgs) -> anyhow::Result<Self> {
        let kafka = KafkaConfig::new(&args.bootstrap)
            .with_env(std::env::vars())
            .with_pairs(&args.properties)
            .map_err(|e| Invalid(format!("-X: {e}")))?;
        Ok(Context { kafka, schemas_dir: args.schemas })
    }

    /// Reads payloads of either framing: single-object by `--schemas`, Confluent's by
    /// `--schema-registry` when it is given.
    ///
    /// Without a `--schemas` folder (run outside the repository, say) single-object
    /// payloads are shown undecoded, with a note: a dead letter or a record is still worth
    /// seeing.
    pub fn payloads(&self, registry: &RegistryArgs) -> anyhow::Result<Payloads> {
        let schemas = if self.schemas_dir.exists() {
            self.schemas()?
        } else {
            let also = if registry.schema_registry.is_some() { " (Confluent-framed ones are, by --schema-registry)" } else { "" };
            eprintln!("note: no schema folder at {} (--schemas, HERALD_SCHEMAS): single-object payloads are not decoded{also}", self.schemas_dir.display());
            SchemaSet::default()
        };
        let registry = match (&registry.schema_registry, &registry.schema_registry_ca) {
            (None, None) => None,
            (None, Some(_)) => invalid!("--schema-registry-ca needs --schema-registry"),
            (Some(url), ca) => {
                let config = RegistryConfig::new(url);
                Some(match ca {
                    None => config,
                    Some(file) => config.ca_file(file).map_err(|e| Invalid(format!("--schema-registry-ca {}: {e}", file.display())))?,
                })
            }
        };
        match Payloads::new(schemas, registry.as_ref()) {
            Ok(payloads) => Ok(payloads),
            Err(e) => invalid!("--schema-registry: {e}"),
        }
    }

    /// Loads every schema under `--schemas`.
    pub fn schemas(&self) -> anyhow::Result<SchemaSet> {
        match SchemaSet::load_dir(&self.schemas_dir) {
            Ok(set) => Ok(set),
            Err(e) => invalid!("--schemas {}: {e}", self.schemas_dir.display()),
        }
    }

    /// The manifest of `--schemas` (which topic carries which types); empty when there is
    /// none or it does not read.
    pub fn manifest(&self) -> herald_schema::manifest::Manifest {
        herald_schema::manifest::Manifest::load(&self.schemas_dir).unwrap_or_default()
    }

    /// A plain rdkafka configuration: `defaults` under the user's properties.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> rdkafka::ClientConfig {
        self.kafka.client_config(defaults)
    }

    /// A publisher whose events carry `source` as `ce_source`.
    pub fn publisher(&self, source: &str) -> anyhow::Result<Publisher> {
        Publisher::new(&self.kafka, PublisherOptions::new(source)).context("cannot create the publisher")
    }
}

pub use herald_ops::shutdown_signal;
