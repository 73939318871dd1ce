//! Whether a transaction whose commit failed with an unknown outcome committed, told by
//! one of its records.
//!
//! A record a transaction wrote (its *witness*: the first changelog record delivered in
//! it, see `TxnProducer::witness`) is returned to `read_committed` readers if and only if
//! the transaction committed. Once the partition's last stable offset is past the
//! record, the transaction is decided there (its marker written), and a `read_committed`
//! read from the record's offset returns the record itself when it committed, and a later
//! record or the partition's end when it was aborted (the reader skips aborted records).
//! Waiting for the last stable offset first matters: before it, the read would end at an
//! older open transaction (another writer's), with the witness neither shown nor skipped.
//! An end of partition with nothing shown counts as "skipped" only if the last stable
//! offset, asked again, is past the witness (a new leader may answer a fetch with an
//! older watermark than its predecessor's). That narrows, without closing, a window
//! where a committed witness reads as aborted: a fetch answered by a lagging new leader
//! exactly at the witness, that leader catching up before the second question; it needs a
//! leader change while the question is asked, so never on a single broker.
//!
//! This tells every transaction that wrote the changelog: any that reacted to something,
//! deadlines alone included, which the group's committed offsets cannot tell (they hold
//! no offset of theirs). One limit: a witness compacted away (a later record of the same
//! key written and its segment cleaned) before the question is asked reads as aborted;
//! a later record of that key is written only after the doubt is resolved, by this
//! member, or by another owner after a revocation, and cleaning needs the segment closed.

use std::time::{Duration, Instant};

use herald_bus::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::producer::Witness;
use super::restore::{is_end_of_partition, Quiet};

/// Whether the transaction that wrote `witness` to `topic` committed: `Some(true)` if it
/// did, `Some(false)` if it was aborted, `None` when `timeout` passed before the partition
/// could tell (an open transaction holds its last stable offset back). Blocking: call it
/// on a blocking thread.
pub(crate) fn committed(config: &KafkaConfig, topic: &str, witness: Witness, timeout: Duration) -> Result<Option<bool>, KafkaError> {
    let deadline = Instant::now() + timeout;
    let mut cc = config.client_config(&[]);
    cc.set("group.id", format!("herald-witness-{topic}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let reader: BaseConsumer<Quiet> = cc.create_with_context(Quiet)?;
    'ask: loop {
        // 1. The witness's transaction decided on its partition: the last stable offset
        //    (the "high" watermark a read_committed client gets) past it.
        if !stable_past(&reader, topic, witness, deadline)? {
            return Ok(None);
        }
        // 2. Read from the witness: itself if committed; past it if aborted.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, witness.partition, Offset::Offset(witness.offset))?;
        reader.assign(&tpl)?;
        while Instant::now() < deadline {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.offset() >= witness.offset => return Ok(Some(m.offset() == witness.offset)),
                Some(Ok(_)) | None => {}
                // The end, at the fetch's last stable offset, with nothing shown: the
                // witness was skipped, unless that offset was not past it after all (a new
                // leader's watermark behind the old one's): then asked again.
                Some(Err(e)) if is_end_of_partition(&e) => {
                    let (_, stable) = reader.fetch_watermarks(topic, witness.partition, Duration::from_secs(5))?;
                    if stable > witness.offset {
                        return Ok(Some(false));
                    }
                    continue 'ask;
                }
                Some(Err(e)) => return Err(e),
            }
        }
        return Ok(None);
    }
}

/// Waits until the last stable offset of the witness's partition is past it; false when
/// `deadline` came first.
fn stable_past(reader: &BaseConsumer<Quiet>, topic: &str, witness: Witness, deadline: Instant) -> Result<bool, KafkaError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let (_, stable) = reader.fetch_watermarks(topic, witness.partition, left.clamp(Duration::from_secs(1), Duration::from_secs(5)))?;
        if stable > witness.offset {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::producer::TxnProducer;
    use herald_bus::publisher::Record;

    /// A topic of one partition and a ready transactional producer witnessed by it.
    async fn setup(name: &str) -> (KafkaConfig, String, TxnProducer) {
        let config = herald_testkit::kafka().await;
        let topic = herald_testkit::topic(&config, name, 1).await;
        let producer = TxnProducer::new(&config, &herald_testkit::unique(name), true, Duration::from_secs(60), (Duration::from_secs(30), Duration::from_secs(30))).expect("producer").witnessed_by(&topic);
        producer.init().await.expect("init");
        (config, topic, producer)
    }

    /// One transaction of two records to `topic` (partition 0), committed or aborted after
    /// both were written; returns its witness.
    async fn transaction(producer: &mut TxnProducer, topic: &str, n: u8, commit: bool) -> Witness {
        producer.begin().await.expect("begin");
        for key in [n, n + 100] {
            let record = Record { topic: topic.to_owned(), key: Some(vec![key]), payload: Some(vec![key]), headers: Default::default(), partition: None };
            producer.send_owned(record, Some(0)).await.expect("send");
        }
        if commit {
            producer.commit(TopicPartitionList::new(), None).await.expect("commit");
        } else {
            producer.delivered().await.expect("written");
            producer.abort().await.expect("abort");
        }
        producer.witness().expect("a witness")
    }

    /// Needs the broker. A committed transaction's witness reads as committed, an aborted
    /// one's as aborted: when nothing but its marker follows it, and when a committed
    /// record does.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_witness_tells_committed_from_aborted() {
        let (config, topic, mut producer) = setup("witness").await;
        let ask = |witness: Witness| {
            let (config, topic) = (config.clone(), topic.clone());
            async move { tokio::task::spawn_blocking(move || committed(&config, &topic, witness, Duration::from_secs(30))).await.expect("task").expect("asked") }
        };
        let first = transaction(&mut producer, &topic, 1, true).await;
        let aborted_last = transaction(&mut producer, &topic, 2, false).await;
        assert_eq!(ask(aborted_last).await, Some(false), "aborted, nothing after it but its marker");
        assert_eq!(ask(first).await, Some(true));
        let aborted = transaction(&mut producer, &topic, 3, false).await;
        let last = transaction(&mut producer, &topic, 4, true).await;
        assert!(first.offset < aborted_last.offset && aborted_last.offset < aborted.offset && aborted.offset < last.offset, "{first:?} {aborted_last:?} {aborted:?} {last:?}");
        assert_eq!(ask(aborted).await, Some(false), "aborted, a committed record after it");
        assert_eq!(ask(aborted_last).await, Some(false));
        assert_eq!(ask(last).await, Some(true));
    }

    /// Needs the broker. While the witness's transaction is open, the partition cannot
    /// tell: no answer (not "aborted") until it ends.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_open_transaction_gives_no_answer() {
        let (config, topic, mut producer) = setup("witness-open").await;
        producer.begin().await.expect("begin");
        producer.send_owned(Record { topic: topic.clone(), key: Some(b"k".to_vec()), payload: None, headers: Default::default(), partition: None }, Some(0)).await.expect("send");
        producer.delivered().await.expect("written");
        let witness = producer.witness().expect("a witness");
        let (c, t) = (config.clone(), topic.clone());
        let open = tokio::task::spawn_blocking(move || committed(&c, &t, witness, Duration::from_secs(2))).await.expect("task").expect("asked");
        assert_eq!(open, None);
        producer.commit(TopicPartitionList::new(), None).await.expect("commit");
        let decided = tokio::task::spawn_blocking(move || committed(&config, &topic, witness, Duration::from_secs(30))).await.expect("task").expect("asked");
        assert_eq!(decided, Some(true));
    }
}
