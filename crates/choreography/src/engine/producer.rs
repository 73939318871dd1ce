//! The process's one transactional producer. Its transaction calls block, so each runs on
//! tokio's blocking pool with a finite timeout; sends are non-blocking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herald_bus::admin::{self, TopicState};
use herald_bus::publisher::{Record, PRODUCER_DEFAULTS};
use herald_bus::KafkaConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};

use super::classify::TxnCall;

/// Counts failed deliveries, so a transaction with a lost record is never committed; and
/// keeps the open transaction's witness.
#[derive(Default)]
pub(crate) struct Counts {
    failed: AtomicU64,
    last: Mutex<Option<KafkaError>>,
    /// Topics whose records the broker refused for what the topic is (missing, not
    /// authorized, its limit), with the error: taken by [`TxnProducer::refused_topics`].
    refused: Mutex<HashMap<String, KafkaError>>,
    /// The topic whose first record delivered in a transaction is its witness.
    witness_topic: OnceLock<String>,
    /// Set at `begin`, cleared once the witness is kept: one check per delivery.
    wants_witness: AtomicBool,
    witness: Mutex<Option<Witness>>,
}

/// Where one record of a transaction landed (partition, offset of its topic): the
/// record is visible to `read_committed` readers if and only if the transaction
/// committed, so it tells a commit whose outcome is unknown (see `witness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Witness {
    pub partition: i32,
    pub offset: i64,
}

/// The producer's context: the delivery counts.
#[derive(Clone, Default)]
pub(crate) struct Deliveries(Arc<Counts>);

impl std::ops::Deref for Deliveries {
    type Target = Counts;
    fn deref(&self) -> &Counts {
        &self.0
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, m)) => {
                self.failed.fetch_add(1, Ordering::AcqRel);
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                if refuses_topic(e) {
                    self.refused.lock().unwrap_or_else(|p| p.into_inner()).insert(m.topic().to_owned(), e.clone());
                }
            }
            Ok(m) if self.wants_witness.load(Ordering::Acquire) && self.witness_topic.get().is_some_and(|t| t == m.topic()) => {
                *self.witness.lock().unwrap_or_else(|p| p.into_inner()) = Some(Witness { partition: m.partition(), offset: m.offset() });
                self.wants_witness.store(false, Ordering::Release);
            }
            Ok(_) => {}
        }
    }
}

/// Whether a delivery failed for what its topic is, not for the transaction or the
/// connection: the same record to the same topic fails again on every try.
fn refuses_topic(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(error.rdkafka_error_code(), Some(UnknownTopicOrPartition | UnknownTopic | TopicAuthorizationFailed | MessageSizeTooLarge))
}

/// A transactional producer with a stable `transactional.id`; or, at least once
/// ([`EngineSettings::exactly_once`](super::EngineSettings::exactly_once) false), an
/// idempotent one whose transaction calls do nothing but flush.
pub(crate) struct TxnProducer {
    inner: Arc<ThreadedProducer<Deliveries>>,
    /// False: at least once, no transaction (begin, abort: nothing; commit: flush only).
    transactional: bool,
    deliveries: Deliveries,
    timeout: Duration,
    /// Limit of `commit_transaction`.
    commit_timeout: Duration,
    /// Failed deliveries counted when the open transaction began.
    failed_at_begin: u64,
    /// True from `begin` until a commit or an abort returned: still true when whoever
    /// ran the transaction stopped in the middle (a task aborted at a deadline while its
    /// blocking call went on), so the next user knows the producer is in an unknown state.
    open: AtomicBool,
    /// The open transaction's offsets went to the coordinator: a commit called again
    /// (after a retriable error) does not send them again.
    offsets_sent: AtomicBool,
    /// `commit_transaction` was called in the open transaction: librdkafka keeps that call
    /// open to be called again, every other transaction call conflicts with it, and its
    /// `EndTxn` may have landed.
    committing: AtomicBool,
}

impl TxnProducer {
    /// Creates the client (no network yet); without a `transactional.id` when not
    /// `transactional`. Its transaction calls wait up to `call_timeout`, its commits up to
    /// `commit_timeout`.
    pub(crate) fn new(config: &KafkaConfig, transactional_id: &str, transactional: bool, transaction_timeout: Duration, (call_timeout, commit_timeout): (Duration, Duration)) -> Result<Self, KafkaError> {
        // Dead letters (an input and its `herald.dlq.*` headers) may exceed the limit the
        // reactions' records keep to (`written::payloads`): their topic decides.
        let mut cc = herald_bus::dead_letter::for_dead_letters(config).client_config(PRODUCER_DEFAULTS);
        let txn_ms = transaction_timeout.as_millis().to_string();
        cc.set("message.timeout.ms", &txn_ms).set("enable.idempotence", "true");
        // A record for a missing topic fails as such (`refused_topics`) only after
        // `topic.metadata.propagation.max.ms` (30 s by default); before, as timed out
        // after `message.timeout.ms`, which says nothing of its topic.
        if cc.get("topic.metadata.propagation.max.ms").is_none() {
            cc.set("topic.metadata.propagation.max.ms", (transaction_timeout.as_millis() / 2).max(1000).to_string());
        }
        if transactional {
            cc.set("transactional.id", transactional_id).set("transaction.timeout.ms", &txn_ms);
        }
        let deliveries = Deliveries::default();
        let inner = cc.create_with_context::<_, ThreadedProducer<Deliveries>>(deliveries.clone())?;
        Ok(TxnProducer { inner: Arc::new(inner), transactional, deliveries, timeout: call_timeout, commit_timeout, failed_at_begin: 0, open: AtomicBool::new(false), offsets_sent: AtomicBool::new(false), committing: AtomicBool::new(false) })
    }

    async fn blocking<T: Send + 'static>(&self, call: TxnCall, f: impl FnOnce(&ThreadedProducer<Deliveries>, Duration) -> Result<T, KafkaError> + Send + 'static) -> Result<T, (TxnCall, KafkaError)> {
        let (inner, timeout) = (self.inner.clone(), self.timeout);
        match tokio::task::spawn_blocking(move || f(&inner, timeout)).await {
            Ok(result) => result.map_err(|e| (call, e)),
            Err(join) => {
                tracing::error!(error = %join, "transaction call panicked");
                Err((call, KafkaError::Global(RDKafkaErrorCode::Fatal)))
            }
        }
    }

    /// `init_transactions`: fences any older producer with this id and aborts what it left open.
    pub(crate) async fn init(&self) -> Result<(), (TxnCall, KafkaError)> {
        if !self.transactional {
            return Ok(());
        }
        self.blocking(TxnCall::Init, |p, t| p.init_transactions(t)).await
    }

    /// Keeps, in each transaction, where its first record to `topic` landed: the
    /// transaction's [`Witness`].
    pub(crate) fn witnessed_by(self, topic: &str) -> Self {
        let _ = self.deliveries.witness_topic.set(topic.to_owned());
        self
    }

    /// Where the open (or last) transaction's first record to the witness topic landed,
    /// once its delivery was reported; `None` when it wrote none there.
    pub(crate) fn witness(&self) -> Option<Witness> {
        *self.deliveries.witness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `begin_transaction`.
    pub(crate) async fn begin(&mut self) -> Result<(), (TxnCall, KafkaError)> {
        self.failed_at_begin = self.deliveries.failed.load(Ordering::Acquire);
        *self.deliveries.witness.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.deliveries.wants_witness.store(self.deliveries.witness_topic.get().is_some(), Ordering::Release);
        self.offsets_sent.store(false, Ordering::Release);
        self.committing.store(false, Ordering::Release);
        self.open.store(true, Ordering::Release);
        if !self.transactional {
            return Ok(());
        }
        self.blocking(TxnCall::Begin, |p, _| p.begin_transaction()).await
    }

    /// True when a transaction began and neither its commit nor an abort returned: its
    /// user stopped in the middle (see [`TxnProducer::dispose`]).
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Drops the producer on a blocking thread: dropping a client purges and flushes its
    /// queue, joins its threads and destroys it, which blocks; never on an async worker.
    /// Whatever it left open is aborted by the `init_transactions` of the next producer
    /// with the same `transactional.id` (or by the broker at `transaction.timeout.ms`).
    pub(crate) fn dispose(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || drop(self));
            }
            Err(_) => drop(self),
        }
    }

    /// Whether `topic` exists, as far as the broker can tell. Asks it on a blocking thread.
    pub(crate) async fn topic_state(&self, topic: &str) -> TopicState {
        let (inner, timeout, name) = (self.inner.clone(), self.timeout, topic.to_owned());
        tokio::task::spawn_blocking(move || admin::topic_state(inner.client(), &name, timeout)).await.unwrap_or(TopicState::Unknown)
    }

    /// Queues a copy of `record` in the open transaction (to `partition` when given), for
    /// callers that keep the record to send it again. Waits while the client's queue is full.
    pub(crate) async fn send(&self, record: &Record, partition: Option<i32>) -> Result<(), (TxnCall, KafkaError)> {
        self.send_parts(&record.topic, record.key.as_deref(), record.payload.as_deref(), record.headers.clone(), partition.or(record.partition)).await
    }

    /// Queues `record` in the open transaction (to `partition` when given): its headers go
    /// to librdkafka as they are, not copied. Waits while the client's queue is full.
    pub(crate) async fn send_owned(&self, record: Record, partition: Option<i32>) -> Result<(), (TxnCall, KafkaError)> {
        self.send_parts(&record.topic, record.key.as_deref(), record.payload.as_deref(), record.headers, partition.or(record.partition)).await
    }

    async fn send_parts(&self, topic: &str, key: Option<&[u8]>, payload: Option<&[u8]>, headers: OwnedHeaders, partition: Option<i32>) -> Result<(), (TxnCall, KafkaError)> {
        let mut headers = Some(headers);
        loop {
            let mut base = BaseRecord::<[u8], [u8], ()>::to(topic);
            (base.key, base.payload, base.partition, base.headers) = (key, payload, partition, headers.take());
            match self.inner.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    headers = back.headers;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    // librdkafka refuses at once a record for a topic it knows to be missing
                    // or refused: no delivery report says so then.
                    if refuses_topic(&e) {
                        self.deliveries.refused.lock().unwrap_or_else(|p| p.into_inner()).insert(topic.to_owned(), e.clone());
                    }
                    return Err((TxnCall::Send, e));
                }
            }
        }
    }

    /// True once `commit_transaction` was called in the open transaction: calling
    /// [`commit`](Self::commit) again resumes it (as librdkafka asks after a retriable
    /// error); nothing else may be done with the transaction.
    pub(crate) fn committing(&self) -> bool {
        self.committing.load(Ordering::Acquire)
    }

    /// `send_offsets_to_transaction` (when there are offsets, and not sent already in this
    /// transaction), then `commit_transaction`. Refuses to commit when a delivery of this
    /// transaction failed.
    pub(crate) async fn commit(&self, offsets: TopicPartitionList, group: Option<ConsumerGroupMetadata>) -> Result<(), (TxnCall, KafkaError)> {
        if self.transactional && offsets.count() > 0 && !self.offsets_sent.load(Ordering::Acquire) {
            let Some(group) = group else {
                // The consumer is gone: these offsets cannot commit.
                return Err((TxnCall::SendOffsets, KafkaError::Global(RDKafkaErrorCode::State)));
            };
            self.blocking(TxnCall::SendOffsets, move |p, t| p.send_offsets_to_transaction(&offsets, &group, t)).await?;
            self.offsets_sent.store(true, Ordering::Release);
        }
        // Flush first, so every delivery report of the transaction is in before deciding.
        self.blocking(TxnCall::Send, wait_delivered).await?;
        if self.deliveries.failed.load(Ordering::Acquire) > self.failed_at_begin {
            let last = self.deliveries.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err((TxnCall::Send, last.unwrap_or(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut))));
        }
        if !self.transactional {
            // At least once: the sinks report the inputs done, and the runtime stores
            // their offsets, only after this flush delivered everything they caused.
            self.open.store(false, Ordering::Release);
            return Ok(());
        }
        // librdkafka's call goes on up to `call_timeout`; the engine waits `commit_timeout`
        // for it. Either way a commit that did not answer in time may still commit (its
        // `EndTxn` sent): the engine then learns the outcome (`outcome_unknown`), and the
        // producer, disposed, is destroyed once the call returned.
        // A zero `commit_timeout` does not wait at all.
        let (inner, call_timeout) = (self.inner.clone(), self.timeout);
        self.committing.store(true, Ordering::Release);
        let call = tokio::task::spawn_blocking(move || inner.commit_transaction(call_timeout));
        let timed_out = || (TxnCall::Commit, KafkaError::Global(RDKafkaErrorCode::OperationTimedOut));
        if self.commit_timeout.is_zero() {
            return Err(timed_out());
        }
        match tokio::time::timeout(self.commit_timeout, call).await {
            Ok(Ok(result)) => result.map_err(|e| (TxnCall::Commit, e))?,
            Ok(Err(join)) => {
                tracing::error!(error = %join, "transaction call panicked");
                return Err((TxnCall::Commit, KafkaError::Global(RDKafkaErrorCode::Fatal)));
            }
            Err(_) => return Err(timed_out()),
        }
        self.open.store(false, Ordering::Release);
        Ok(())
    }

    /// The topics whose records were refused for what the topic is (missing, not
    /// authorized, over its `max.message.bytes`) since the last call, with the error.
    pub(crate) fn refused_topics(&self) -> Vec<(String, KafkaError)> {
        std::mem::take(&mut *self.deliveries.refused.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect()
    }

    /// Waits until every record sent is written (or failed).
    #[cfg(test)]
    pub(crate) async fn delivered(&self) -> Result<(), (TxnCall, KafkaError)> {
        self.blocking(TxnCall::Send, wait_delivered).await
    }

    /// `abort_transaction`.
    pub(crate) async fn abort(&self) -> Result<(), (TxnCall, KafkaError)> {
        if self.transactional {
            self.blocking(TxnCall::Abort, |p, t| p.abort_transaction(t)).await?;
        }
        self.open.store(false, Ordering::Release);
        Ok(())
    }
}

/// Waits until every queued record is delivered and its report served, or `timeout`.
///
/// Not `Producer::flush`: on a `ThreadedProducer` its loop polls the client's queue for up
/// to 100 ms at a time while the producer's own thread serves the delivery reports, so
/// every flush with a record in flight took at least 100 ms and each transaction's commit
/// with it (measured: 100.2 ms per flush; the reaction step's throughput was bound by it).
/// `in_flight_count` counts the records queued, in flight, and awaiting their report.
fn wait_delivered(producer: &ThreadedProducer<Deliveries>, timeout: Duration) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    #[test]
    fn only_what_the_topic_is_refuses_it() {
        let delivery = KafkaError::MessageProduction;
        for code in [RDKafkaErrorCode::UnknownTopicOrPartition, RDKafkaErrorCode::UnknownTopic, RDKafkaErrorCode::TopicAuthorizationFailed, RDKafkaErrorCode::MessageSizeTooLarge] {
            assert!(super::refuses_topic(&delivery(code)), "{code:?}");
        }
        // The transaction's or the connection's troubles, which another try may not meet.
        for code in [RDKafkaErrorCode::MessageTimedOut, RDKafkaErrorCode::PurgeQueue, RDKafkaErrorCode::State, RDKafkaErrorCode::NotLeaderForPartition, RDKafkaErrorCode::BrokerTransportFailure, RDKafkaErrorCode::InvalidProducerEpoch] {
            assert!(!super::refuses_topic(&delivery(code)), "{code:?}");
        }
    }
}
