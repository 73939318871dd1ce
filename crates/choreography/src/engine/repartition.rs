//! The repartition step: inputs whose state key is not their Kafka key are copied,
//! unchanged (payload and headers, so their `ce_id` and correlation survive), to the
//! participant's internal topic keyed by the state key
//! ([`Declaration::repartition_topic`](crate::declaration::Declaration::repartition_topic)),
//! and the participant consumes that topic: each state key then has one writer however
//! many instances run.
//!
//! Exactly once too: a consume-transform-produce in one transaction per batch (the copies
//! and the input offsets, with fresh group metadata), in its own consumer group
//! (`<group>.repartition`) with its own transactional producer
//! (`<group>.repartition.<instance>`). A failed transaction is aborted (or the producer
//! rebuilt, by [`classify`](super::classify)) and the batch delivered again by the runtime.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use herald_bus::consumer::OwnedRecord;
use herald_bus::dead_letter::{Failure, Stage};
use herald_bus::publisher::Record;
use herald_bus::runtime::{Delivery, FailureClass, Membership, Offsets, PartitionSink, Progress, Sink};
use herald_bus::KafkaConfig;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::classify::{classify, TxnCall, TxnClass};
use super::decode::Reader;
use super::producer::TxnProducer;
use super::EngineSettings;

/// What the repartition sinks share: readers by source topic (with the target topic), the
/// one transactional producer.
pub(crate) struct Shared<I> {
    pub readers: HashMap<String, (Reader<I>, String)>,
    pub producer: tokio::sync::Mutex<Option<TxnProducer>>,
    pub membership: OnceLock<Membership>,
    pub config: KafkaConfig,
    pub transactional_id: String,
    pub settings: EngineSettings,
}

/// The repartition sink.
pub(crate) struct RepartitionSink<I>(pub Arc<Shared<I>>);

impl<I: Send + 'static> Sink for RepartitionSink<I> {
    type Partition = RepartitionPartition<I>;

    fn offsets(&self) -> Offsets {
        Offsets::Owned
    }

    fn attach(&self, membership: Membership) {
        let _ = self.0.membership.set(membership);
    }

    fn open(&self, topic: &Arc<str>, partition: i32) -> Option<Self::Partition> {
        self.0.readers.contains_key(&**topic).then(|| RepartitionPartition { shared: self.0.clone(), topic: topic.clone(), partition })
    }
}

/// One source partition.
pub(crate) struct RepartitionPartition<I> {
    shared: Arc<Shared<I>>,
    topic: Arc<str>,
    partition: i32,
}

impl<I: Send + 'static> RepartitionPartition<I> {
    /// Copies `records` re-keyed and moves the partition to `next`, in one transaction.
    ///
    /// Whatever fails, the producer left behind can begin the next transaction: a failed
    /// call (`begin` included) is followed by an abort, or by a new producer when the
    /// error is fatal or the abort fails; and a producer that a stopped transaction left
    /// open is replaced (see [`ready`]).
    async fn transact(&self, records: Vec<Record>, next: i64) -> Result<(), (TxnCall, rdkafka::error::KafkaError)> {
        let mut slot = self.shared.producer.lock().await;
        let producer = ready(&mut slot, &self.shared.config, &self.shared.transactional_id, &self.shared.settings).await?;
        let result = async {
            producer.begin().await?;
            for record in &records {
                producer.send(record, None).await?;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(next)).map_err(|e| (TxnCall::SendOffsets, e))?;
            producer.commit(tpl, self.shared.membership.get().and_then(Membership::group_metadata)).await
        }
        .await;
        if let Err((call, e)) = &result
            && (classify(*call, e) == TxnClass::Fatal || producer.abort().await.is_err())
            && let Some(dropped) = slot.take()
        {
            dropped.dispose(); // rebuilt at the next batch: its init_transactions fences this one
        }
        result
    }
}

/// The producer for the next transaction: the one in `slot`, or a new one (initialised)
/// when there is none or when the one there is still in a transaction nobody finished.
///
/// That happens when a revocation's deadline aborted the worker in the middle of a
/// transaction: its blocking call goes on, the transaction stays open, and every `begin`
/// afterwards failed, so the repartition step never moved again (seen after a broker
/// outage: `repartition transaction (Begin)` for minutes). The new producer's
/// `init_transactions` fences the old one and aborts what it left open.
async fn ready<'a>(slot: &'a mut Option<TxnProducer>, config: &KafkaConfig, transactional_id: &str, settings: &EngineSettings) -> Result<&'a mut TxnProducer, (TxnCall, rdkafka::error::KafkaError)> {
    if let Some(stale) = slot.take_if(|p| p.is_open()) {
        tracing::warn!(transactional_id, "a transaction was left open by a stopped worker: replacing the producer");
        stale.dispose();
    }
    let producer = match slot.take() {
        Some(producer) => producer,
        None => {
            let producer = TxnProducer::new(config, transactional_id, true, settings.transaction_timeout, settings.call_timeout).map_err(|e| (TxnCall::Init, e))?;
            if let Err(failed) = producer.init().await {
                producer.dispose();
                return Err(failed);
            }
            producer
        }
    };
    Ok(slot.insert(producer))
}

#[async_trait]
impl<I: Send + 'static> PartitionSink for RepartitionPartition<I> {
    async fn deliver(&mut self, batch: &[OwnedRecord], _attempt: u32, progress: &Progress, cancel: &CancellationToken) -> Delivery {
        if cancel.is_cancelled() {
            return Delivery::Interrupted;
        }
        let Some((reader, target)) = self.shared.readers.get(&*self.topic) else { return Delivery::Interrupted };
        let mut records = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (index, record) in batch.iter().enumerate() {
            let msg = record.to_message();
            match reader.decode(&msg) {
                Ok((routed, _)) => {
                    let headers = msg.headers().map_or_else(OwnedHeaders::new, |hs| {
                        use rdkafka::message::Headers;
                        hs.iter().fold(OwnedHeaders::new_with_capacity(hs.count()), |acc, h| acc.insert(Header { key: h.key, value: h.value }))
                    });
                    records.push(Record { topic: target.clone(), key: Some(routed.key.into_bytes()), payload: msg.payload().map(<[u8]>::to_vec), headers });
                }
                Err(failure) => {
                    failed = Some((index, failure));
                    break;
                }
            }
        }
        let count = records.len();
        if count > 0 {
            let next = batch[count - 1].offset() + 1;
            // Revoked or lost: stop at once instead of holding the revocation (and the
            // consumer's poll) until a blocking transaction call returns; the producer
            // left in the transaction is replaced by the next batch (see `ready`).
            let transacted = tokio::select! {
                result = self.transact(records, next) => result,
                _ = cancel.cancelled() => return Delivery::Interrupted,
            };
            if let Err((call, e)) = transacted {
                let failure = Failure { stage: Stage::Unavailable, reason: format!("repartition transaction ({call:?}): {e}"), attempts: 0 };
                return Delivery::Failed { index: 0, failure, class: FailureClass::Wait };
            }
            for record in &batch[..count] {
                progress.done(record.offset());
            }
        }
        match failed {
            Some((index, failure)) => Delivery::Failed { index, failure, class: FailureClass::Permanent },
            None => Delivery::Done,
        }
    }

    async fn dead_lettered(&mut self, record: &OwnedRecord, failure: &Failure) -> Result<(), Failure> {
        self.transact(Vec::new(), record.offset() + 1).await.map_err(|(call, e)| Failure { reason: format!("moving past the dead letter ({call:?}): {e}"), ..failure.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the broker (`KAFKA_BOOTSTRAP_SERVERS`, see herald-testkit).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_producer_left_in_a_transaction_by_a_stopped_worker_is_replaced() {
        let config = herald_testkit::kafka().await;
        let settings = EngineSettings::new("ready-test");
        let id = herald_testkit::unique("repartition-ready");
        let mut slot = None;
        // A worker begins a transaction and is stopped before it commits or aborts.
        ready(&mut slot, &config, &id, &settings).await.expect("a producer").begin().await.expect("begin");
        let stuck = slot.as_mut().expect("kept");
        assert!(stuck.is_open());
        assert!(stuck.begin().await.is_err(), "the producer left in the transaction cannot begin another");
        // The next transaction gets a producer that can.
        let fresh = ready(&mut slot, &config, &id, &settings).await.expect("a new producer");
        assert!(!fresh.is_open());
        fresh.begin().await.expect("a new transaction begins");
        fresh.abort().await.expect("abort");
        assert!(!fresh.is_open());
    }
}
