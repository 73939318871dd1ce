//! The idempotency records on a compacted Kafka topic, keyed by the key's hash: a claim
//! before each fresh request publishes, its `202` once the event was acknowledged (or its
//! release when it failed); read from the beginning at start, then followed, so a
//! restarted instance and the other instances learn them, in the topic's order.

use std::sync::{Arc, Weak};
use std::time::Duration;

use herald_bus::admin::{self, TopicSpec};
use herald_bus::publisher::Record;
use herald_bus::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use super::store::{LogRecord, Store};

/// The topic could not be prepared or read.
#[derive(Debug, thiserror::Error)]
#[error("idempotency topic {topic}: {reason}")]
pub struct LogError {
    /// The topic.
    pub topic: String,
    /// Why.
    pub reason: String,
}

/// Creates `topic` if missing (compacted, and deleting records older than `ttl`).
pub async fn create(kafka: &KafkaConfig, topic: &str, ttl: Duration) -> Result<(), LogError> {
    let spec = TopicSpec::new(topic)
        .partitions(3)
        .retention(admin::Retention::For(ttl))
        .config("cleanup.policy", "compact,delete");
    admin::create_topics(kafka, &[spec]).await.map(|_| ()).map_err(|e| LogError { topic: topic.to_owned(), reason: e.to_string() })
}

/// Suffix of the Kafka key of a key's claims and releases ([`record`]).
const CLAIM_SUFFIX: &str = ".claim";

/// The Kafka record of `record` for the key with hash `hash`, on a topic of `partitions`
/// partitions.
///
/// A finished key's record has the hash as its Kafka key; its claims and releases have
/// `HASH.claim`, written to the hash's partition. So they stay in the one order every
/// instance reads, and compaction, which keeps the last record of each Kafka key, never
/// replaces a key's `202` with a claim or release written after it (a claim made before
/// its instance read the `202`, a release after a read-back timeout): that `202` would be
/// gone after a restart, and the key published again once the claim expired.
pub fn record(topic: &str, hash: &str, record: &LogRecord, partitions: u32) -> Result<Record, LogError> {
    let value = serde_json::to_vec(record).map_err(|e| LogError { topic: topic.to_owned(), reason: e.to_string() })?;
    let key = match record {
        LogRecord::Done(_) => hash.to_owned(),
        LogRecord::Claim { .. } | LogRecord::Release { .. } => format!("{hash}{CLAIM_SUFFIX}"),
    };
    let partition = herald_bus::partitioner::partition_for(hash.as_bytes(), partitions) as i32;
    Ok(Record::new(topic, key, value, OwnedHeaders::new()).to_partition(partition))
}

/// The key hash a record's Kafka key names (see [`record`]).
fn hash_of(key: &str) -> &str {
    key.strip_suffix(CLAIM_SUFFIX).unwrap_or(key)
}

/// What [`load_and_follow`] found.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// Records read before following.
    pub records: usize,
    /// The topic's partitions.
    pub partitions: u32,
}

/// Reads `topic` from the beginning to its current end into `store` (within `timeout`),
/// then follows it on a blocking thread while `store` is alive.
pub async fn load_and_follow(kafka: &KafkaConfig, topic: &str, store: &Arc<Store>, timeout: Duration) -> Result<Loaded, LogError> {
    let (kafka, topic_name, weak) = (kafka.clone(), topic.to_owned(), Arc::downgrade(store));
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("gateway-idempotency".to_owned())
        .spawn(move || follow(&kafka, &topic_name, weak, timeout, loaded_tx))
        .map_err(|e| LogError { topic: topic.to_owned(), reason: e.to_string() })?;
    loaded_rx.await.map_err(|_| LogError { topic: topic.to_owned(), reason: "the reader stopped".to_owned() })?
}

/// How often the reader forgets records older than the TTL ([`Store::prune`]).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often, once loaded, the reader asks the cluster for the topic's metadata on its own
/// client (waiting at most as long). A client librdkafka left with no broker reads nothing
/// and says nothing (see [`herald_bus::rebootstrap`]); an idle topic reads nothing too, so
/// silence cannot tell. An unanswered check gives the client its bootstrap servers back and
/// shows on `/health` ([`Store::reader_checked`]).
const CHECK_EVERY: Duration = Duration::from_secs(5);

fn follow(kafka: &KafkaConfig, topic: &str, store: Weak<Store>, timeout: Duration, loaded: tokio::sync::oneshot::Sender<Result<Loaded, LogError>>) {
    let error = |reason: String| LogError { topic: topic.to_owned(), reason };
    let consumer = match open(kafka, topic, timeout) {
        Ok(c) => c,
        Err(e) => {
            let _ = loaded.send(Err(error(e)));
            return;
        }
    };
    let (consumer, mut ends) = consumer;
    let deadline = std::time::Instant::now() + timeout;
    let mut count = 0usize;
    let mut loaded = Some(loaded);
    let mut pruned_at = std::time::Instant::now();
    let mut checked_at = std::time::Instant::now();
    loop {
        if ends.iter().all(|(_, end, pos)| pos >= end)
            && let Some(tx) = loaded.take()
        {
            let _ = tx.send(Ok(Loaded { records: count, partitions: ends.len() as u32 }));
        }
        if loaded.is_some() && std::time::Instant::now() > deadline {
            if let Some(tx) = loaded.take() {
                let _ = tx.send(Err(error(format!("not read to its end within {} s", timeout.as_secs()))));
            }
            return;
        }
        let Some(store) = store.upgrade() else { return };
        if loaded.is_none() && pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = std::time::Instant::now();
            let forgotten = store.prune(chrono::Utc::now().timestamp_millis());
            tracing::debug!(forgotten, "idempotency records older than the TTL forgotten");
        }
        if loaded.is_none() && checked_at.elapsed() >= CHECK_EVERY {
            let answered = herald_bus::rebootstrap::check(consumer.client(), topic, CHECK_EVERY)
                .map(drop)
                .map_err(|e| format!("the idempotency topic's reader got no metadata within {CHECK_EVERY:?}: {e}"));
            store.reader_checked(answered);
            checked_at = std::time::Instant::now();
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if let Some(entry) = ends.iter_mut().find(|(p, _, _)| *p == message.partition()) {
                    entry.2 = message.offset() + 1;
                }
                let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
                let value = message.payload().and_then(|v| serde_json::from_slice::<LogRecord>(v).ok());
                match (key, value) {
                    (Some(key), Some(record)) => {
                        store.read(hash_of(key).to_owned(), record, message.partition(), message.offset());
                        count += 1;
                    }
                    _ => store.advance(message.partition(), message.offset() + 1),
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "idempotency topic"),
            None => {}
        }
    }
}

/// `(partition, end offset, position)` of each partition being read.
type Ends = Vec<(i32, i64, i64)>;

/// A consumer assigned to every partition from the beginning, and each partition's end.
/// A topic just created can take a moment to have leaders everywhere: retried until
/// `timeout`.
fn open(kafka: &KafkaConfig, topic: &str, timeout: Duration) -> Result<(BaseConsumer, Ends), String> {
    let group = format!("herald-gateway-idempotency-{}", uuid::Uuid::new_v4());
    let consumer: BaseConsumer = kafka
        .client_config(&[("group.id", &group), ("enable.auto.commit", "false"), ("enable.partition.eof", "false")])
        .create()
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout;
    let ends = loop {
        match ends(&consumer, topic, timeout) {
            Ok(ends) => break ends,
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let mut assignment = TopicPartitionList::new();
    for (p, _, _) in &ends {
        assignment.add_partition_offset(topic, *p, Offset::Beginning).map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    Ok((consumer, ends))
}

/// `(partition, high watermark, low watermark)` of each partition.
fn ends(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<Ends, String> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = metadata.topics().iter().filter(|t| t.name() == topic && t.error().is_none()).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        return Err("no such topic".to_owned());
    }
    partitions
        .into_iter()
        .map(|p| consumer.fetch_watermarks(topic, p, timeout).map(|(low, high)| (p, high, low)).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::{Claim, Stored};

    #[test]
    fn a_keys_claims_have_their_own_kafka_key_on_the_partition_of_its_202() {
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let accepted = crate::handler::Accepted { id: uuid::Uuid::nil(), topic: "t".into(), partition: 0, offset: 1 };
        let kinds = [
            LogRecord::Done(Stored { fingerprint: "fp".into(), accepted, at_ms: 1 }),
            LogRecord::Claim { claim: Claim { nonce: "n".into(), at_ms: 1 } },
            LogRecord::Release { release: "n".into() },
        ];
        for partitions in [1, 3, 7] {
            let records: Vec<Record> = kinds.iter().map(|k| record("t", hash, k, partitions).unwrap_or_else(|e| panic!("{e}"))).collect();
            let keys: Vec<String> = records.iter().map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned()).collect();
            assert_eq!(keys, [hash.to_owned(), format!("{hash}.claim"), format!("{hash}.claim")], "compaction keeps the 202 apart from claims");
            let expected = herald_bus::partitioner::partition_for(hash.as_bytes(), partitions) as i32;
            assert!(records.iter().all(|r| r.partition == Some(expected)), "one partition, one order");
            assert!(keys.iter().all(|k| hash_of(k) == hash));
        }
        // Claims written before they had a key of their own (keyed by the hash) read as before.
        assert_eq!(hash_of(hash), hash);
    }
}
