//! Reading a one-partition topic to its end with a plain rdkafka consumer: the raw reads
//! `recovery` and `reads` measure Herald against.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

/// What a read to the end read.
pub struct ReadToEnd {
    /// Records handed over.
    pub records: u64,
    /// From the assignment to the end of the partition.
    pub seconds: f64,
}

/// Reads partition 0 of `topic` from its start to its end (partition EOF),
/// read_committed, in a fresh group that commits nothing, handing each record to
/// `on_record`.
pub fn read_to_end(bootstrap: &str, topic: &str, mut on_record: impl FnMut(&BorrowedMessage<'_>)) -> anyhow::Result<ReadToEnd> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("herald-bench-raw-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let mut records = 0u64;
    let deadline = started + Duration::from_secs(600);
    loop {
        anyhow::ensure!(Instant::now() < deadline, "{topic}: not at its end after {records} records");
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                records += 1;
                on_record(&m);
            }
        }
    }
    Ok(ReadToEnd { records, seconds: started.elapsed().as_secs_f64() })
}
