//! Reading a changelog partition back into the state of its keys.
//!
//! Co-partitioned: input partition `p` of every input topic writes its keys' state to
//! changelog partition `p`, so the owner of `p` reads exactly that partition back, with
//! `read_committed`, before it reacts to anything of `p`.
//!
//! **Caught up** is decided from partition EOF, never from the high watermark − 1
//! (commit markers take offsets, and an open transaction holds back the last stable
//! offset). Before reading, it waits until the partition has no open transaction (its last
//! stable offset, what a `read_committed` client's watermark query returns, equals the
//! high watermark a `read_uncommitted` client sees): a previous owner's last transaction,
//! or a zombie's that the broker will abort at `transaction.timeout.ms`, must be decided
//! before its state can be read.
//!
//! **How long that wait can take.** A transaction this instance's transactional id left
//! open (a crash, a fatal error) ends at once: the coordinator calls `init_transactions`
//! as soon as partitions are assigned, before their restores, and the broker aborts it.
//! Any other live transaction ends by its commit or abort, or is
//! aborted by the broker once it is older than `transaction.timeout.ms`
//! ([`EngineSettings::transaction_timeout`](super::EngineSettings::transaction_timeout),
//! 10 s by default), which the broker checks every
//! `transaction.abort.timed.out.transaction.cleanup.interval.ms` (10 s by default). So
//! after [`stable_wait`] (the transaction timeout + that interval + 10 s) an open
//! transaction is no longer a live one: it is a *hanging* transaction, whose coordinator
//! finished it without writing its marker to this partition. Kafka does that when the
//! partition has no leader while the coordinator sends its markers: it takes the
//! partition for deleted and skips it (`TransactionMarkerChannelManager`: "Couldn't find
//! leader endpoint for partitions ... likely deleted already and hence can be skipped").
//! A controlled shutdown of the only broker (or of the only replica of a partition) leaves
//! every partition leaderless for a moment, and a transaction ending then hangs forever:
//! no client can end it, only an operator (`kafka-transactions.sh find-hanging`, then
//! `abort`, in the order the [engine's docs](super#hanging-transactions) give). The
//! restore then fails with a message that says so, the engine's health
//! reports it, and the coordinator tries again every second (so an operator's abort
//! heals it). A live transaction is therefore waited for at most [`stable_wait`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_bus::KafkaConfig;
use tokio_util::sync::CancellationToken;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::EngineError;
use crate::changelog::StateCodec;
use crate::slot::Slot;

/// The changelog readers' context: partition EOF is how a read ends, not an error.
pub(crate) struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_end_of_partition(&error) {
            tracing::warn!(%error, reason, "changelog reader error");
        }
    }
}

/// Partition EOF in either shape: the poll's `PartitionEOF(partition)`, or the error
/// callback's `Global(PartitionEOF)` (rust-rdkafka passes consumer error events to both).
pub(crate) fn is_end_of_partition(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_)) || error.rdkafka_error_code() == Some(rdkafka::error::RDKafkaErrorCode::PartitionEOF)
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// The reason of the error a cancelled restore returns.
pub(crate) const CANCELLED: &str = "cancelled";

/// The broker's `transaction.abort.timed.out.transaction.cleanup.interval.ms` default.
const ABORT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// How long a restore waits for the partition's open transaction to end before it calls
/// it hanging (see the [module docs](self)): `transaction_timeout` + the broker's abort
/// check interval + 10 s.
pub(crate) fn stable_wait(transaction_timeout: Duration) -> Duration {
    transaction_timeout + ABORT_CHECK_INTERVAL + Duration::from_secs(10)
}

/// How long a restore may read nothing before it gives up (the coordinator tries it again,
/// and the engine's health says why). Not a limit on the whole read: a partition of any
/// size restores as long as its records keep coming. (A total limit, 300 s before, made a
/// partition that takes longer to read fail and start over for ever.)
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(60);

/// How often a long restore logs how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How far a restore's read is: when it last read a record, and when it last said so.
#[derive(Debug)]
struct Progress {
    records: u64,
    offset: i64,
    read_at: Instant,
    said_at: Instant,
}

impl Progress {
    fn new(now: Instant) -> Self {
        Progress { records: 0, offset: -1, read_at: now, said_at: now }
    }

    fn read(&mut self, offset: i64, now: Instant) {
        self.records += 1;
        self.offset = offset;
        self.read_at = now;
    }

    /// Nothing read for [`STALL_LIMIT`].
    fn stalled(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.read_at) >= STALL_LIMIT
    }

    /// Whether to say how far it is ([`PROGRESS_EVERY`]); marks it said.
    fn due_to_say(&mut self, now: Instant) -> bool {
        let due = now.saturating_duration_since(self.said_at) >= PROGRESS_EVERY;
        if due {
            self.said_at = now;
        }
        due
    }
}

/// Reads changelog partition `partition` of `topic` to its end; returns the slot of each
/// key (tombstoned keys absent). Waits for an open transaction on the partition until
/// `stable_deadline` (see the [module docs](self)). Returns early, with the reason
/// [`CANCELLED`], once `cancel` is cancelled. Blocking: call it on a blocking thread.
pub(crate) fn restore<S: Serialize + DeserializeOwned + apache_avro::AvroSchema>(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    codec: &StateCodec<S>,
    stable_deadline: Instant,
    cancel: &CancellationToken,
) -> Result<HashMap<String, Slot<S>>, EngineError> {
    let fail = |reason: String| EngineError::Restore { topic: topic.to_owned(), partition, reason };
    let client = |isolation: &str, eof: &str| -> Result<BaseConsumer<Quiet>, KafkaError> {
        let mut cc = config.client_config(&[]);
        cc.set("group.id", format!("herald-restore-{topic}"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .set("enable.partition.eof", eof)
            .set("auto.offset.reset", "earliest");
        cc.create_with_context(Quiet)
    };
    let committed = client("read_committed", "true")?;
    let uncommitted = client("read_uncommitted", "false")?;
    // 1. No open transaction on the partition.
    let high = loop {
        let (_, stable) = committed.fetch_watermarks(topic, partition, Duration::from_secs(5))?;
        let (_, high) = uncommitted.fetch_watermarks(topic, partition, Duration::from_secs(5))?;
        if stable >= high {
            break high;
        }
        if cancel.is_cancelled() {
            return Err(fail(CANCELLED.into()));
        }
        if Instant::now() >= stable_deadline {
            return Err(fail(format!(
                "a transaction stays open past the transaction timeout (last stable offset {stable}, high watermark {high}): a hanging transaction whose markers the broker never wrote (it skips a leaderless partition, as in a controlled shutdown of its only replica); only an operator can end it: kafka-transactions.sh find-hanging, then abort each partition it lists, this changelog and __consumer_offsets last (see the engine's docs on hanging transactions)"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(uncommitted);
    // 2. Read it all, read_committed, to partition EOF.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    committed.assign(&tpl)?;
    // The latest record of each key, still encoded: a key's earlier records are
    // superseded (what compaction would drop), so only the last one is decoded, at the
    // end. A partition not compacted yet (the engine writes a key's slot in every
    // transaction that changed it) holds many records per key: decoding each was most of
    // a restore's time (BENCHMARKS.md, "Aggregates: recovery").
    let mut latest: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)> = HashMap::new();
    let mut progress = Progress::new(Instant::now());
    loop {
        if cancel.is_cancelled() {
            return Err(fail(CANCELLED.into()));
        }
        let now = Instant::now();
        if progress.stalled(now) {
            return Err(fail(format!("nothing read for {} s, after {} records (offset {} of the high watermark {high})", STALL_LIMIT.as_secs(), progress.records, progress.offset)));
        }
        if progress.due_to_say(now) {
            tracing::info!(topic, partition, records = progress.records, offset = progress.offset, high_watermark = high, "restoring state");
        }
        match committed.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(fail(e.to_string())),
            Some(Ok(msg)) => {
                progress.read(msg.offset(), now);
                let Some(key) = msg.key() else {
                    tracing::warn!(topic, partition, offset = msg.offset(), "changelog record without a key: skipped");
                    continue;
                };
                let payload = msg.payload();
                match latest.get_mut(key) {
                    // Reuse the key's buffer: no allocation per superseded record.
                    Some((offset, kept)) => {
                        *offset = msg.offset();
                        match (kept.as_mut(), payload) {
                            (Some(buffer), Some(bytes)) => {
                                buffer.clear();
                                buffer.extend_from_slice(bytes);
                            }
                            (_, bytes) => *kept = bytes.map(<[u8]>::to_vec),
                        }
                    }
                    None => {
                        latest.insert(key.to_vec(), (msg.offset(), payload.map(<[u8]>::to_vec)));
                    }
                }
            }
        }
    }
    let mut slots = HashMap::with_capacity(latest.len());
    for (key, (offset, payload)) in latest {
        let Ok(key) = String::from_utf8(key) else {
            tracing::warn!(topic, partition, offset, "changelog record without a UTF-8 key: skipped");
            continue;
        };
        // A tombstone (no payload) leaves the key absent.
        if let Some(bytes) = payload {
            let slot = codec.decode(&bytes).map_err(|e| fail(format!("offset {offset}: {e}")))?;
            slots.insert(key, slot);
        }
    }
    tracing::info!(topic, partition, records = progress.records, keys = slots.len(), "state restored");
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode;

    #[test]
    fn a_restore_that_keeps_reading_never_stalls_and_one_that_reads_nothing_does() {
        let start = Instant::now();
        let mut progress = Progress::new(start);
        // An hour of reading, a record a second: far past any total limit, never stalled.
        for second in 1..3_600 {
            let now = start + Duration::from_secs(second);
            assert!(!progress.stalled(now), "stalled at {second} s while reading");
            progress.read(second as i64, now);
        }
        let last = start + Duration::from_secs(3_599);
        assert!(!progress.stalled(last + STALL_LIMIT - Duration::from_millis(1)));
        assert!(progress.stalled(last + STALL_LIMIT));
        assert_eq!((progress.records, progress.offset), (3_599, 3_599));
    }

    #[test]
    fn a_long_restore_says_how_far_it_is_every_few_seconds() {
        let start = Instant::now();
        let mut progress = Progress::new(start);
        assert!(!progress.due_to_say(start + Duration::from_secs(1)));
        assert!(progress.due_to_say(start + PROGRESS_EVERY));
        assert!(!progress.due_to_say(start + PROGRESS_EVERY + Duration::from_secs(1)));
        assert!(progress.due_to_say(start + PROGRESS_EVERY * 2));
    }

    #[test]
    fn an_open_transaction_is_waited_for_past_the_broker_abort_of_a_live_one() {
        assert_eq!(stable_wait(Duration::from_secs(10)), Duration::from_secs(30));
        assert!(stable_wait(Duration::from_secs(60)) > Duration::from_secs(60) + ABORT_CHECK_INTERVAL);
    }

    /// Needs the broker (`KAFKA_BOOTSTRAP_SERVERS`, see herald-testkit).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_waiting_for_an_open_transaction_stops_when_cancelled() {
        use crate::compensation::Compensation;
        use herald_bus::publisher::Record;
        let config = herald_testkit::kafka().await;
        let topic = herald_testkit::topic(&config, "restore-cancel", 1).await;
        // A live transaction holds the partition's last stable offset.
        let mut producer = super::super::producer::TxnProducer::new(&config, &herald_testkit::unique("restore-cancel"), true, Duration::from_secs(60), (Duration::from_secs(30), Duration::from_secs(30))).expect("producer");
        producer.init().await.expect("init");
        producer.begin().await.expect("begin");
        producer.send(&Record { topic: topic.clone(), key: Some(b"k".to_vec()), payload: None, headers: Default::default(), partition: None }, Some(0)).await.expect("send");
        // `send` only queues the record: the transaction holds the partition once it is
        // written, which only a read_uncommitted client sees (librdkafka's default is
        // read_committed, whose high watermark is the last stable offset).
        let probe: BaseConsumer = config.client_config(&[("isolation.level", "read_uncommitted")]).create().expect("probe");
        herald_testkit::wait_until(Duration::from_secs(30), "the open transaction's record is in the partition", || async {
            probe.fetch_watermarks(&topic, 0, Duration::from_secs(5)).is_ok_and(|(_, high)| high >= 1)
        })
        .await;
        let codec = std::sync::Arc::new(StateCodec::<Compensation>::new().expect("codec"));
        let cancel = CancellationToken::new();
        let (c, t, k, token) = (config.clone(), topic.clone(), codec.clone(), cancel.clone());
        let waiting = tokio::task::spawn_blocking(move || restore(&c, &t, 0, &k, Instant::now() + Duration::from_secs(120), &token));
        // Still waiting after a while (the transaction is open)...
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!waiting.is_finished(), "a restore must wait for the open transaction");
        // ...and ends soon when cancelled (at its next check, after the watermark queries
        // in flight, up to 5 s each on a loaded machine), not at its deadline two minutes on.
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("the cancelled restore returns long before its deadline").expect("join");
        assert!(matches!(&result, Err(EngineError::Restore { reason, .. }) if reason == CANCELLED), "{result:?}");
        producer.abort().await.expect("abort");
        // With the transaction ended, a restore reads the partition (the aborted record absent).
        let restored = tokio::task::spawn_blocking(move || restore(&config, &topic, 0, &codec, Instant::now() + Duration::from_secs(60), &CancellationToken::new())).await.expect("join").expect("restored");
        assert!(restored.is_empty());
    }

    /// Needs the broker. A key's last record wins: earlier ones (even undecodable) are
    /// superseded, a tombstone removes the key, and a key written again after its
    /// tombstone is back.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_keeps_the_last_record_of_each_key() {
        use crate::compensation::Compensation;
        use herald_bus::publisher::Record;
        let config = herald_testkit::kafka().await;
        let topic = herald_testkit::topic(&config, "restore-latest", 1).await;
        let codec = std::sync::Arc::new(StateCodec::<Compensation>::new().expect("codec"));
        let slot = |compensating| Some(codec.encode(&Slot::new(Compensation { compensating })).expect("encodes"));
        let writes: Vec<(&str, Option<Vec<u8>>)> = vec![
            ("a", slot(false)),
            ("b", Some(b"not a changelog record".to_vec())),
            ("a", slot(true)),
            ("c", slot(true)),
            ("b", slot(true)),
            ("c", None),
            ("d", slot(true)),
            ("d", None),
            ("d", slot(false)),
        ];
        let mut producer = super::super::producer::TxnProducer::new(&config, &herald_testkit::unique("restore-latest"), true, Duration::from_secs(60), (Duration::from_secs(30), Duration::from_secs(30))).expect("producer");
        producer.init().await.expect("init");
        producer.begin().await.expect("begin");
        for (key, payload) in writes {
            producer.send(&Record { topic: topic.clone(), key: Some(key.as_bytes().to_vec()), payload, headers: Default::default(), partition: None }, Some(0)).await.expect("send");
        }
        producer.commit(TopicPartitionList::new(), None).await.expect("commit");
        let restored = tokio::task::spawn_blocking(move || restore(&config, &topic, 0, &codec, Instant::now() + Duration::from_secs(60), &CancellationToken::new())).await.expect("join").expect("restored");
        let mut states: Vec<(String, bool)> = restored.into_iter().map(|(k, s)| (k, s.state().compensating)).collect();
        states.sort();
        assert_eq!(states, [("a".to_owned(), true), ("b".to_owned(), true), ("d".to_owned(), false)]);
    }

    #[test]
    fn partition_eof_is_recognised_in_both_shapes() {
        assert!(is_end_of_partition(&KafkaError::PartitionEOF(3)));
        assert!(is_end_of_partition(&KafkaError::Global(RDKafkaErrorCode::PartitionEOF)));
        assert!(!is_end_of_partition(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure)));
    }
}
