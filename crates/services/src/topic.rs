//! The registry topic: one partition, compacted.

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::KafkaConfig;

use crate::RegistryError;

/// Creates the registry topic if it is missing: one partition (every reader reads all of
/// it, and one partition keeps every instance's records in order), `cleanup.policy=compact`
/// so only the latest record per `service/instance` is kept and tombstones remove it.
/// An existing topic is left as it is.
pub async fn ensure_topic(config: &KafkaConfig, topic: &str) -> Result<(), RegistryError> {
    let spec = TopicSpec::new(topic).partitions(1).config("cleanup.policy", "compact");
    create_topics(config, &[spec]).await?;
    Ok(())
}
