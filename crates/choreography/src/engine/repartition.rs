//! The repartition step: inputs whose state key is not their Kafka key are copied,
//! unchanged (payload and headers, so their `ce_id` and correlation survive), to the
//! participant's internal topic keyed by the state key
//! ([`Declaration::repartition_topic`](crate::declaration::Declaration::repartition_topic)),
//! and the participant consumes that topic: each state key then has one writer however
//! many instances run.
//!
//! Exactly once too: a consume-transform-produce in its own consumer group
//! (`<group>.repartition`) with its own transactional producer
//! (`<group>.repartition.<instance>`): the copies and the input offsets (with fresh group
//! metadata) commit in one transaction. A failed transaction is aborted (or the producer
//! rebuilt, by [`classify`](super::classify)) and its batches delivered again by the
//! runtime. A commit that failed with an unknown outcome may still have committed
//! ([`outcome_unknown`](super::outcome_unknown)): the committer then asks the group's
//! committed offsets, once the next producer's `init_transactions` made the broker finish
//! it, and copies again only the records after them (until it knows, it copies nothing).
//!
//! **Group commit.** The partitions hand their batches to one committer task, which owns
//! the producer: it takes every batch that is waiting and commits them in one transaction,
//! then the next. While a transaction commits, the batches that arrive meanwhile gather
//! for the next one, so an idle step commits a batch at once and a busy one commits many
//! per transaction. It used to commit one transaction per batch, the partitions taking
//! turns on the producer behind a mutex: with the few records a batch holds at a moderate
//! rate, each command cost a transaction of its own, and the step capped the saga's
//! throughput (BENCHMARKS.md, end-to-end saga latency).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use herald_bus::consumer::OwnedRecord;
use herald_bus::dead_letter::{Failure, Stage};
use herald_bus::publisher::Record;
use herald_bus::runtime::{Delivery, FailureClass, Membership, Offsets, PartitionSink, Progress, Sink};
use herald_bus::KafkaConfig;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::classify::{classify, outcome_unknown, TxnCall, TxnClass};
use super::decode::Reader;
use super::producer::TxnProducer;
use super::written::FRAMING_BYTES;
use super::EngineSettings;

/// A failed transaction call.
type Failed = (TxnCall, KafkaError);

/// One partition's batch for the committer: its copies with their source offsets, and the
/// partition's next offset.
pub(crate) struct Job {
    records: Vec<(i64, Record)>,
    topic: Arc<str>,
    partition: i32,
    next: i64,
    done: oneshot::Sender<Result<(), Failed>>,
}

/// How one source topic is copied.
pub(crate) struct Copying<I> {
    pub reader: Reader<I>,
    /// The repartition topic.
    pub target: String,
    /// The largest record it takes (see `limits`), and that limit's name for a reason.
    pub max: usize,
    pub named: String,
}

/// What the repartition sinks share: how each source topic is copied, the committer's
/// queue.
pub(crate) struct Shared<I> {
    pub readers: HashMap<String, Copying<I>>,
    pub jobs: mpsc::UnboundedSender<Job>,
    pub membership: Arc<OnceLock<Membership>>,
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
    /// Copies `records` re-keyed and moves the partition to `next`, in the committer's next
    /// transaction; returns once it committed or failed.
    async fn transact(&self, records: Vec<(i64, Record)>, next: i64) -> Result<(), Failed> {
        let (done, committed) = oneshot::channel();
        let job = Job { records, topic: self.topic.clone(), partition: self.partition, next, done };
        let gone = || (TxnCall::Commit, KafkaError::Canceled);
        self.shared.jobs.send(job).map_err(|_| gone())?;
        committed.await.map_err(|_| gone())?
    }
}

/// The task that owns the step's transactional producer: see the [module docs](self).
pub(crate) struct Committer {
    pub jobs: mpsc::UnboundedReceiver<Job>,
    pub membership: Arc<OnceLock<Membership>>,
    pub config: KafkaConfig,
    pub transactional_id: String,
    pub settings: EngineSettings,
    /// The offsets of a transaction whose commit failed with an unknown outcome, until the broker says whether
    /// it committed ([`Committer::resolve`]).
    pub in_doubt: Option<HashMap<(Arc<str>, i32), i64>>,
    /// Offsets a transaction in doubt turned out to have committed, by partition: records
    /// before them are not copied again (their batches come back after the failure was
    /// reported), until a transaction of the partition moves past them.
    pub landed: HashMap<(Arc<str>, i32), i64>,
}

impl Committer {
    /// Commits what the partitions hand over until every sender is gone (the runtime
    /// stopped), then drops the producer.
    pub(crate) async fn run(mut self) {
        let mut slot = None;
        while let Some(first) = self.jobs.recv().await {
            let mut jobs = vec![first];
            let mut records = jobs[0].records.len();
            while records < self.settings.max_batch
                && let Ok(job) = self.jobs.try_recv()
            {
                records += job.records.len();
                jobs.push(job);
            }
            let result = match self.resolve(&mut slot).await {
                Ok(()) => self.transact(&mut slot, &jobs).await,
                Err(failed) => Err(failed),
            };
            for job in jobs {
                let _ = job.done.send(result.clone());
            }
        }
        if let Some(producer) = slot.take() {
            producer.dispose();
        }
    }

    /// One transaction for `jobs`, without what a transaction in doubt turned out to have
    /// committed ([`Committer::landed`]) and without the jobs nobody waits for any more (a
    /// revocation interrupted their partition: its next owner copies them). Whatever fails,
    /// the producer left behind can begin the next transaction: a failed call (`begin`
    /// included) is followed by an abort, or by a new producer when the error is fatal or
    /// the abort fails; a commit whose outcome is unknown is resolved at once if it can be.
    async fn transact(&mut self, slot: &mut Option<TxnProducer>, jobs: &[Job]) -> Result<(), Failed> {
        let jobs: Vec<&Job> = jobs.iter().filter(|job| !job.done.is_closed()).collect();
        let mut next: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        for job in &jobs {
            let key = (job.topic.clone(), job.partition);
            if self.landed.get(&key).is_some_and(|&at| at >= job.next) {
                continue;
            }
            let at = next.entry(key).or_insert(job.next);
            *at = (*at).max(job.next);
        }
        if next.is_empty() {
            return Ok(()); // all of it committed already
        }
        let producer = ready(slot, &self.config, &self.transactional_id, &self.settings).await?;
        let landed = &self.landed;
        let result = async {
            producer.begin().await?;
            for job in &jobs {
                let from = landed.get(&(job.topic.clone(), job.partition)).copied().unwrap_or(i64::MIN);
                for (_, record) in job.records.iter().filter(|(offset, _)| *offset >= from) {
                    producer.send(record, None).await?;
                }
            }
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &next {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(|e| (TxnCall::SendOffsets, e))?;
            }
            // A partition revoked meanwhile may be another member's under the next
            // generation, which the metadata taken now would be: its offsets must not commit.
            if jobs.iter().any(|job| job.done.is_closed()) {
                return Err((TxnCall::SendOffsets, KafkaError::Global(rdkafka::error::RDKafkaErrorCode::IllegalGeneration)));
            }
            producer.commit(tpl, self.membership.get().and_then(Membership::group_metadata)).await
        }
        .await;
        if let Err((call, e)) = &result
            && outcome_unknown(*call, e)
        {
            tracing::warn!(error = %e, "repartition commit failed and may still commit: asking the broker");
            if let Some(dropped) = slot.take() {
                dropped.dispose();
            }
            self.in_doubt = Some(next.clone());
            self.resolve(slot).await?;
            // Committed: what it held is in `landed`; aborted: delivered again.
            return if next.iter().all(|(key, at)| self.landed.get(key) == Some(at)) { Ok(()) } else { result };
        }
        if let Err((call, e)) = &result
            && (classify(*call, e) == TxnClass::Fatal || producer.abort().await.is_err())
            && let Some(dropped) = slot.take()
        {
            dropped.dispose(); // rebuilt for the next transaction: its init_transactions fences this one
        }
        if result.is_ok() {
            // Past what the transaction in doubt held: nothing of theirs comes back.
            self.landed.retain(|key, at| next.get(key).is_none_or(|passed| *passed < *at));
        }
        result
    }

    /// Learns whether the transaction in doubt, if any, committed: a new producer's
    /// `init_transactions` returns once the broker finished it, then the group's committed
    /// offsets (stable ones: the consumer reads committed) are at or past its own if it
    /// did, and one is below if it did not. Committed: its offsets
    /// go to [`Committer::landed`]. Fails (and stays in doubt) when the broker cannot tell
    /// yet.
    async fn resolve(&mut self, slot: &mut Option<TxnProducer>) -> Result<(), Failed> {
        let Some(doubt) = &self.in_doubt else { return Ok(()) };
        ready(slot, &self.config, &self.transactional_id, &self.settings).await?;
        let membership = self.membership.get().cloned().ok_or((TxnCall::Commit, KafkaError::Global(rdkafka::error::RDKafkaErrorCode::State)))?;
        let partitions: Vec<(String, i32)> = doubt.keys().map(|(topic, partition)| (topic.to_string(), *partition)).collect();
        let timeout = self.settings.call_timeout;
        let committed = tokio::task::spawn_blocking(move || membership.committed(&partitions, timeout).map(|at| (partitions, at)))
            .await
            .map_err(|_| (TxnCall::Commit, KafkaError::Canceled))?
            .map_err(|e| (TxnCall::Commit, e))?;
        // Committed: each partition is at the transaction's offset, or past it if it moved
        // on to another owner. Aborted: a partition still this member's is below it.
        let landed = committed.0.iter().zip(&committed.1).all(|((topic, partition), at)| at.zip(doubt.get(&(Arc::from(topic.as_str()), *partition)).copied()).is_some_and(|(at, ours)| at >= ours));
        if let Some(doubt) = self.in_doubt.take()
            && landed
        {
            for (key, at) in doubt {
                let kept = self.landed.entry(key).or_insert(at);
                *kept = (*kept).max(at);
            }
        }
        tracing::info!(committed = landed, "repartition commit that failed: outcome known");
        Ok(())
    }
}

/// The producer for the next transaction: the one in `slot`, or a new one (initialised)
/// when there is none or when the one there is still in a transaction nobody finished
/// (its user stopped in the middle: the new producer's `init_transactions` fences the old
/// one and aborts what it left open).
///
/// When each partition's worker ran its own transactions, a revocation's deadline could
/// abort one in the middle: its blocking call went on, the transaction stayed open, and
/// every `begin` afterwards failed, so the step never moved again (seen after a broker
/// outage: `repartition transaction (Begin)` for minutes).
async fn ready<'a>(slot: &'a mut Option<TxnProducer>, config: &KafkaConfig, transactional_id: &str, settings: &EngineSettings) -> Result<&'a mut TxnProducer, Failed> {
    if let Some(stale) = slot.take_if(|p| p.is_open()) {
        tracing::warn!(transactional_id, "a transaction was left open: replacing the producer");
        stale.dispose();
    }
    let producer = match slot.take() {
        Some(producer) => producer,
        None => {
            let producer = TxnProducer::new(config, transactional_id, true, settings.transaction_timeout, (settings.call_timeout, settings.commit_timeout)).map_err(|e| (TxnCall::Init, e))?;
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
        let Some(Copying { reader, target, max, named }) = self.shared.readers.get(&*self.topic) else { return Delivery::Interrupted };
        let mut records = Vec::with_capacity(batch.len());
        let mut failed = None;
        // Records taken: copied, or skipped (an unknown type the policy skips).
        let mut count = 0;
        for (index, record) in batch.iter().enumerate() {
            match reader.decode(record) {
                Ok((routed, _)) => {
                    let copy = Record { topic: target.clone(), key: Some(routed.key.into_bytes()), payload: record.payload().map(<[u8]>::to_vec), headers: record.owned_headers(), partition: None };
                    // Keyed by its state key, the copy can be larger than the input: one
                    // the broker refuses would fail its transaction on every try, and hold
                    // the partition for good. The input is dead-lettered instead.
                    let size = copy.size() + FRAMING_BYTES;
                    if size > *max {
                        let reason = format!("its copy keyed by its state key for {target} would be a record of about {size} bytes, over {named}");
                        failed = Some((index, Failure { stage: Stage::Handler, reason, attempts: 1 }));
                        break;
                    }
                    records.push((record.offset(), copy));
                }
                Err(failure) if reader.skip(&failure) => {}
                Err(failure) => {
                    failed = Some((index, failure));
                    break;
                }
            }
            count += 1;
        }
        if count > 0 {
            let next = batch[count - 1].offset() + 1;
            // Revoked or lost: stop at once instead of holding the revocation (and the
            // consumer's poll) until the transaction returns; if it commits, the offsets
            // moved with the copies, and if not, the next owner copies the batch.
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
