//! What the dashboard reads from Kafka: the topics with their offsets (rates come from
//! successive [`Samples`]) and dead letters. Blocking calls: run them on a blocking thread.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use herald_bus::dead_letter::DeadLetter;
use herald_bus::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

/// Most topics listed.
pub const MAX_TOPICS: usize = 500;

/// One topic's offsets now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicOffsets {
    /// The topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: usize,
    /// Records in it now: the sum of its partitions' high − low watermarks.
    pub records: i64,
    /// The sum of its partitions' high watermarks (grows by one per record written).
    pub end: i64,
}

/// True for a dead-letter topic's name (`*.dlq`, `*_dlq`, as
/// [`herald_bus::dead_letter::topic_for`] names them).
///
/// ```
/// use herald_gateway::dashboard::broker::is_dead_letter_topic;
/// assert!(is_dead_letter_topic("shop.orders.dlq") && is_dead_letter_topic("shop_orders_dlq"));
/// assert!(!is_dead_letter_topic("shop.orders"));
/// ```
pub fn is_dead_letter_topic(topic: &str) -> bool {
    topic.ends_with(".dlq") || topic.ends_with("_dlq")
}

/// A Kafka client that never joins a group.
pub struct Broker {
    kafka: KafkaConfig,
    consumer: BaseConsumer,
    timeout: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Broker {
    /// A client for `kafka`; each broker request waits at most `timeout`.
    pub fn new(kafka: &KafkaConfig, timeout: Duration) -> Result<Self, KafkaError> {
        let consumer = reader(kafka)?;
        Ok(Broker { kafka: kafka.clone(), consumer, timeout })
    }

    /// The topics whose names start with `prefix` (Kafka's internal `__*` ones left out),
    /// sorted, at most [`MAX_TOPICS`]; the flag says whether some were left out.
    pub fn topics(&self, prefix: &str) -> Result<(Vec<TopicOffsets>, bool), KafkaError> {
        let metadata = self.consumer.fetch_metadata(None, self.timeout)?;
        let mut names: Vec<(String, usize)> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && t.name().starts_with(prefix) && !t.name().starts_with("__"))
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect();
        names.sort();
        let truncated = names.len() > MAX_TOPICS;
        names.truncate(MAX_TOPICS);
        // Two ListOffsets requests per broker for every partition at once (timestamp -2 is
        // the earliest offset, -1 the latest), rather than a round trip per partition.
        let mut earliest = TopicPartitionList::new();
        let mut latest = TopicPartitionList::new();
        for (topic, partitions) in &names {
            for p in 0..*partitions as i32 {
                earliest.add_partition_offset(topic, p, Offset::Beginning)?;
                latest.add_partition_offset(topic, p, Offset::End)?;
            }
        }
        let offsets = |list: TopicPartitionList| -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
            let found = if list.count() == 0 { list } else { self.consumer.offsets_for_times(list, self.timeout)? };
            Ok(found
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if e.error().is_ok() => Some(((e.topic().to_owned(), e.partition()), o)),
                    _ => None,
                })
                .collect())
        };
        let (low, high) = (offsets(earliest)?, offsets(latest)?);
        let mut out = Vec::with_capacity(names.len());
        for (topic, partitions) in names {
            let (mut records, mut end) = (0, 0);
            for p in 0..partitions as i32 {
                let key = (topic.clone(), p);
                let h = high.get(&key).copied().unwrap_or(0);
                records += (h - low.get(&key).copied().unwrap_or(h)).max(0);
                end += h;
            }
            out.push(TopicOffsets { topic, partitions, records, end });
        }
        Ok((out, truncated))
    }

    /// The last `per_partition` dead letters of each partition of `topic` (records without
    /// Herald's dead-letter headers are skipped), newest first.
    pub fn dead_letters(&self, topic: &str, per_partition: i64) -> Result<Vec<DeadLetter>, KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(topic), self.timeout)?;
        let partitions = metadata.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len()) as i32;
        let mut ranges = Vec::new();
        for p in 0..partitions {
            let (low, high) = self.consumer.fetch_watermarks(topic, p, self.timeout)?;
            if high > low {
                ranges.push((p, (high - per_partition).max(low), high));
            }
        }
        let mut letters = Vec::new();
        self.read(topic, &ranges, |m| letters.extend(DeadLetter::parse(m)))?;
        letters.sort_by(|a, b| b.time.cmp(&a.time).then(b.dlq_offset.cmp(&a.dlq_offset)));
        Ok(letters)
    }

    /// The dead letter at `partition`/`offset` of `topic`; `None` when there is no record
    /// there or it is not a dead letter.
    pub fn dead_letter(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<DeadLetter>, KafkaError> {
        let (low, high) = match self.consumer.fetch_watermarks(topic, partition, self.timeout) {
            Ok(marks) => marks,
            Err(KafkaError::MetadataFetch(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut found = None;
        self.read(topic, &[(partition, offset, offset + 1)], |m| {
            if m.offset() == offset {
                found = DeadLetter::parse(m);
            }
        })?;
        Ok(found)
    }

    /// Reads each `(partition, from, to)` of `topic` from `from` until `to` (exclusive) or
    /// the partition's end, within the timeout, with a consumer of its own.
    fn read(&self, topic: &str, ranges: &[(i32, i64, i64)], mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>)) -> Result<(), KafkaError> {
        if ranges.is_empty() {
            return Ok(());
        }
        let consumer = reader(&self.kafka)?;
        let mut assignment = TopicPartitionList::new();
        for &(p, from, _) in ranges {
            assignment.add_partition_offset(topic, p, Offset::Offset(from))?;
        }
        consumer.assign(&assignment)?;
        let ends: BTreeMap<i32, i64> = ranges.iter().map(|&(p, _, to)| (p, to)).collect();
        let mut done = std::collections::BTreeSet::new();
        let deadline = Instant::now() + self.timeout * 3;
        while done.len() < ends.len() {
            if Instant::now() >= deadline {
                return Err(KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::OperationTimedOut));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    done.insert(p);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(message)) => {
                    let p = message.partition();
                    if ends.get(&p).is_some_and(|&end| message.offset() < end) {
                        each(&message);
                    }
                    if ends.get(&p).is_some_and(|&end| message.offset() + 1 >= end) {
                        done.insert(p);
                    }
                }
            }
        }
        Ok(())
    }
}

fn reader(kafka: &KafkaConfig) -> Result<BaseConsumer, KafkaError> {
    kafka
        .client_config(&[
            ("group.id", "herald.gateway.dashboard"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
        ])
        .create()
}

/// The end offsets of the topics over the last [`super::RATE_WINDOW`], for their rates.
#[derive(Debug, Default)]
pub struct Samples {
    taken: VecDeque<(Instant, BTreeMap<String, i64>)>,
}

/// A topic with its rate.
#[derive(Debug, Clone, Serialize)]
pub struct TopicRate {
    /// The topic and its offsets.
    #[serde(flatten)]
    pub offsets: TopicOffsets,
    /// Records written per second over the window (`None` until two samples exist).
    pub rate: Option<f64>,
}

impl Samples {
    /// Adds the sample `topics` taken at `now` and returns each topic with its rate: the
    /// growth of its end offset since the oldest sample of the window, per second.
    pub fn add(&mut self, now: Instant, topics: Vec<TopicOffsets>) -> Vec<TopicRate> {
        while self.taken.len() > 1 && self.taken.front().is_some_and(|(at, _)| now.duration_since(*at) > super::RATE_WINDOW) {
            self.taken.pop_front();
        }
        let oldest = self.taken.front().filter(|(at, _)| now.duration_since(*at) >= Duration::from_millis(500));
        let rated = topics
            .iter()
            .map(|t| {
                let rate = oldest.and_then(|(at, ends)| {
                    let before = *ends.get(&t.topic)?;
                    Some((t.end - before).max(0) as f64 / now.duration_since(*at).as_secs_f64())
                });
                TopicRate { offsets: t.clone(), rate }
            })
            .collect();
        self.taken.push_back((now, topics.into_iter().map(|t| (t.topic, t.end)).collect()));
        if self.taken.len() > 64 {
            self.taken.pop_front();
        }
        rated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(topic: &str, end: i64) -> TopicOffsets {
        TopicOffsets { topic: topic.to_owned(), partitions: 1, records: end, end }
    }

    #[test]
    fn a_rate_is_the_end_offsets_growth_per_second_over_the_window() {
        let mut samples = Samples::default();
        let t0 = Instant::now();
        let first = samples.add(t0, vec![offsets("a", 100)]);
        assert_eq!(first[0].rate, None);
        let second = samples.add(t0 + Duration::from_secs(2), vec![offsets("a", 140), offsets("b", 5)]);
        assert_eq!((second[0].rate, second[1].rate), (Some(20.0), None));
        // Samples older than the window are dropped: the rate is measured from t0 + 2 s on.
        let third = samples.add(t0 + Duration::from_secs(14), vec![offsets("a", 140), offsets("b", 65)]);
        assert_eq!((third[0].rate, third[1].rate), (Some(0.0), Some(5.0)));
    }
}
