//! The largest record the engine may write to each topic it writes.
//!
//! A topic's own `max.message.bytes` may be lower than the producer's `message.max.bytes`
//! (an operator's choice, or a managed service's). The broker refuses a record batch over
//! it, and librdkafka does not split a refused batch: the transaction holding it fails on
//! every try, and the partition waits for ever. So at start the engine reads the limit of
//! each topic it writes (its declared outputs and its changelog), keeps its producer's
//! batches (`batch.size`) under the smallest, and checks each reaction's records against
//! their topic's limit before the reaction is applied (see `written`). A limit changed
//! while the engine runs is read at its next start. Topics an input names (reply topics)
//! are held to the producer's limit only. The inputs' dead-letter topics are read too: a
//! letter over its topic's limit is not written in the transaction (see the coordinator's
//! `hand_back`).

use std::collections::HashMap;

use herald_bus::KafkaConfig;

/// librdkafka's default `batch.size`.
const BATCH_SIZE_DEFAULT: usize = 1_000_000;

/// Room kept under a topic's limit for a batch's own framing, which librdkafka's
/// `batch.size` may count differently from the broker.
const BATCH_MARGIN: usize = 1024;

/// The record limits of the topics the engine writes.
#[derive(Debug, Clone)]
pub(crate) struct RecordLimits {
    /// The producer's `message.max.bytes`.
    producer: usize,
    /// The limit of each declared output (by the name the participant emits to, before
    /// any prefix), where it is lower than the producer's.
    outputs: HashMap<String, usize>,
    /// The changelog's limit.
    changelog: usize,
    /// The limit of each input's dead-letter topic (by its name on the broker), where it is
    /// lower than the producer's.
    dead_letters: HashMap<String, usize>,
}

impl RecordLimits {
    /// Every topic held to the producer's `message.max.bytes` from `config`.
    pub(crate) fn of_producer(config: &KafkaConfig) -> Self {
        let producer = herald_bus::publisher::max_message_bytes(config);
        RecordLimits { producer, outputs: HashMap::new(), changelog: producer, dead_letters: HashMap::new() }
    }

    /// Reads each topic's `max.message.bytes` from the broker: `outputs` as (the name the
    /// participant emits to, the topic on the broker), and the inputs' `dead_letters`. A
    /// limit that cannot be read (an ACL refusing `DescribeConfigs`, a dead-letter topic
    /// not made) is taken to be the producer's, with a warning.
    pub(crate) async fn read(config: &KafkaConfig, outputs: &[(String, String)], changelog: &str, dead_letters: &[String]) -> Self {
        let mut limits = Self::of_producer(config);
        // One request for every topic, each once: librdkafka puts each answer at the first
        // place its topic was asked for, so a topic asked twice would leave a gap.
        let mut topics: Vec<&str> = outputs.iter().map(|(_, t)| t.as_str()).chain(dead_letters.iter().map(String::as_str)).chain([changelog]).collect();
        topics.sort_unstable();
        topics.dedup();
        let read: HashMap<&str, usize> = topics.iter().copied().zip(topic_limits(config, &topics).await).filter_map(|(t, l)| Some((t, l?))).collect();
        let producer = limits.producer;
        let lower = |topic: &str| read.get(topic).copied().filter(|l| *l < producer);
        for (emitted, topic) in outputs {
            if let Some(limit) = lower(topic) {
                limits.outputs.insert(emitted.clone(), limit);
            }
        }
        for topic in dead_letters {
            if let Some(limit) = lower(topic) {
                limits.dead_letters.insert(topic.clone(), limit);
            }
        }
        limits.changelog = lower(changelog).unwrap_or(producer);
        limits
    }

    pub(crate) fn output(&self, topic: &str, exact: bool) -> usize {
        if exact { self.producer } else { self.outputs.get(topic).copied().unwrap_or(self.producer) }
    }

    /// The largest changelog record.
    pub(crate) fn changelog(&self) -> usize {
        self.changelog
    }

    /// The largest record for the dead-letter topic `topic`.
    pub(crate) fn dead_letter(&self, topic: &str) -> usize {
        self.dead_letters.get(topic).copied().unwrap_or(self.producer)
    }

    /// Says which setting `max` (one of these limits) is, for a reason.
    pub(crate) fn named(&self, max: usize) -> String {
        if max == self.producer { format!("message.max.bytes = {max}") } else { format!("the topic's max.message.bytes = {max}") }
    }

    /// `config` for the engine's producer: its `batch.size` lowered, when a topic it writes
    /// takes less, so no batch is over that topic's limit.
    pub(crate) fn producer_config(&self, config: &KafkaConfig) -> KafkaConfig {
        let smallest = self.outputs.values().chain(self.dead_letters.values()).copied().chain([self.changelog]).min().unwrap_or(self.producer);
        let configured = config.get("batch.size").and_then(|v| v.parse().ok()).unwrap_or(BATCH_SIZE_DEFAULT);
        let fits = smallest.saturating_sub(BATCH_MARGIN).max(1);
        if fits < configured { config.clone().set("batch.size", fits.to_string()) } else { config.clone() }
    }
}

/// `topic`'s `max.message.bytes`; `None` when it cannot be read.
/// The `max.message.bytes` of each of `topics`, in order: `None` for one that does not
/// exist or whose limit cannot be read (its records are then held to the producer's limit).
async fn topic_limits(config: &KafkaConfig, topics: &[&str]) -> Vec<Option<usize>> {
    let unread = |topic: &str, e: &dyn std::fmt::Display| tracing::warn!(topic, error = %e, "the topic's max.message.bytes could not be read: its records are held to the producer's message.max.bytes");
    match herald_bus::admin::topic_configs(config, topics, "max.message.bytes").await {
        Ok(values) => topics
            .iter()
            .zip(values)
            .map(|(topic, value)| match value {
                Ok(value) => value.and_then(|v| v.parse().ok()),
                Err(e) => {
                    unread(topic, &e);
                    None
                }
            })
            .collect(),
        Err(e) => {
            unread(&topics.join(", "), &e);
            vec![None; topics.len()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(outputs: &[(&str, usize)], changelog: usize) -> RecordLimits {
        RecordLimits { producer: 1_048_588, outputs: outputs.iter().map(|(t, l)| (t.to_string(), *l)).collect(), changelog, dead_letters: HashMap::new() }
    }

    #[test]
    fn an_output_is_held_to_its_own_limit_and_an_exact_topic_to_the_producers() {
        let limits = limits(&[("small", 20_000)], 1_048_588);
        assert_eq!(limits.output("small", false), 20_000);
        assert_eq!(limits.output("other", false), 1_048_588);
        assert_eq!(limits.output("small", true), 1_048_588, "a reply topic of the same name is another topic");
    }

    #[test]
    fn batches_are_kept_under_the_smallest_topic_limit() {
        let config = KafkaConfig::new("127.0.0.1:9092");
        assert_eq!(limits(&[], 1_048_588).producer_config(&config).get("batch.size"), None, "the default fits");
        assert_eq!(limits(&[("small", 20_000)], 1_048_588).producer_config(&config).get("batch.size"), Some("18976"));
        assert_eq!(limits(&[], 50_000).producer_config(&config).get("batch.size"), Some("48976"), "the changelog counts");
        let letters = RecordLimits { dead_letters: [("in.dlq".to_owned(), 30_000)].into(), ..limits(&[], 1_048_588) };
        assert_eq!(letters.producer_config(&config).get("batch.size"), Some("28976"), "a dead-letter topic counts");
        assert_eq!((letters.dead_letter("in.dlq"), letters.dead_letter("other.dlq")), (30_000, 1_048_588));
        let tight = config.set("batch.size", "10000");
        assert_eq!(limits(&[("small", 20_000)], 1_048_588).producer_config(&tight).get("batch.size"), Some("10000"), "a smaller setting is kept");
    }
}
