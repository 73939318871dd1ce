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
    async fn transact(&self, records: Vec<Record>, next: i64) -> Result<(), (TxnCall, rdkafka::error::KafkaError)> {
        let mut slot = self.shared.producer.lock().await;
        if slot.is_none() {
            let s = &self.shared.settings;
            let producer = TxnProducer::new(&self.shared.config, &self.shared.transactional_id, true, s.transaction_timeout, s.call_timeout).map_err(|e| (TxnCall::Init, e))?;
            producer.init().await?;
            *slot = Some(producer);
        }
        let Some(producer) = slot.as_mut() else { return Ok(()) };
        producer.begin().await?;
        let result = async {
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
        {
            *slot = None; // rebuilt at the next batch: its init_transactions fences this one
        }
        result
    }
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
            if let Err((call, e)) = self.transact(records, next).await {
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
