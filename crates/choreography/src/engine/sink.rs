//! The engine's sink on herald-bus's consumer runtime: partitions hand their records to
//! the coordinator and wait for the transaction that covers them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use herald_bus::consumer::OwnedRecord;
use herald_bus::dead_letter::Failure;
use herald_bus::runtime::{Assignment, Delivery, FailureClass, Membership, Offsets, PartitionSink, Progress, Sink};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::coordinator::{Command, Held};
use super::decode::Reader;
use super::growth::{Counts, Growth};

/// The sink: see the [module docs](self).
pub(crate) struct EngineSink<I, S> {
    pub tx: mpsc::UnboundedSender<Command<I, S>>,
    pub readers: Arc<HashMap<String, Reader<I>>>,
    pub membership: Arc<OnceLock<Membership>>,
    /// How long a revocation waits for the coordinator to commit or abort.
    pub revoke_wait: Duration,
    /// Who moves the consumed positions: the transaction (exactly once, `Owned`) or the
    /// runtime after the flush that delivered their effects (at least once, `Stored`).
    pub offsets: Offsets,
    /// Revocations given up on (see [`Overdue`]).
    pub overdue: Arc<Overdue>,
    /// Whether an input gained partitions (see `growth`).
    pub growth: Arc<Growth>,
    /// Inputs the coordinator handed back (see [`HandedBack`]).
    pub handed_back: Arc<HandedBack>,
}

/// Inputs whose dead letter the coordinator could not write in its transaction (over the
/// dead-letter topic's `max.message.bytes`: the transaction would fail on every try, and
/// with it every partition of the engine): it reacted to nothing of their partition from
/// them on, and hands them back to the partition's worker, which writes the letter itself
/// or, when it cannot be written, parks the partition and reports it (as the bus runtime
/// does for any consumer). The other partitions go on.
#[derive(Debug, Default)]
pub(crate) struct HandedBack(std::sync::Mutex<HashMap<(String, i32), (i64, Failure)>>);

impl HandedBack {
    /// The coordinator hands back the input at `offset` of `topic`'s `partition`.
    pub(crate) fn put(&self, topic: &str, partition: i32, offset: i64, failure: Failure) {
        self.lock().insert((topic.to_owned(), partition), (offset, failure));
    }

    /// The offset of the input handed back of `topic`'s `partition`, if one is.
    pub(crate) fn offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lock().get(&(topic.to_owned(), partition)).map(|(offset, _)| *offset)
    }

    /// Drops what was handed back of `partitions` (revoked or lost).
    pub(crate) fn forget(&self, partitions: &[(String, i32)]) {
        let mut handed = self.lock();
        for at in partitions {
            handed.remove(at);
        }
    }

    /// What was handed back of `topic`'s `partition`, taken.
    fn take(&self, topic: &str, partition: i32) -> Option<(i64, Failure)> {
        self.lock().remove(&(topic.to_owned(), partition))
    }

    /// What was handed back of `topic`'s `partition` among `offsets` (a submission's, in
    /// order), taken; one of a later offset is left for its submission, one of an earlier
    /// one (of a partition lost and assigned again meanwhile) is moot and dropped.
    fn take_among(&self, topic: &str, partition: i32, offsets: std::ops::RangeInclusive<i64>) -> Option<(i64, Failure)> {
        let mut handed = self.lock();
        let key = (topic.to_owned(), partition);
        let offset = handed.get(&key)?.0;
        if offset > *offsets.end() {
            return None;
        }
        let taken = handed.remove(&key);
        taken.filter(|_| offset >= *offsets.start())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), (i64, Failure)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Partitions whose revocation the consumer stopped waiting for: the coordinator was
/// inside a reaction or a blocking call past `revoke_wait`, so the rebalance went on
/// without it, and the partitions may have another owner already. The coordinator must not
/// commit their offsets any more: it fetched fresh group metadata for every commit, and
/// under the next generation (this member keeps its place in the group) the broker would
/// take them, while the new owner reacts to the same inputs again. The coordinator takes
/// them before each commit and forgets them as lost (aborting what is open).
#[derive(Debug, Default)]
pub(crate) struct Overdue(std::sync::Mutex<Vec<(String, i32)>>);

impl Overdue {
    fn give_up(&self, partitions: &[(String, i32)]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(partitions);
    }

    /// The partitions given up on since the last call.
    pub(crate) fn take(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Forgets `partitions` (assigned again: no longer overdue).
    pub(crate) fn remove(&self, partitions: &[(String, i32)]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| !partitions.contains(p));
    }
}

impl<I: Send + 'static, S: Send + 'static> Sink for EngineSink<I, S> {
    type Partition = EnginePartition<I, S>;

    fn offsets(&self) -> Offsets {
        self.offsets
    }

    fn attach(&self, membership: Membership) {
        let _ = self.membership.set(membership);
    }

    /// Tells the coordinator, but of partitions beyond the engine's count (an input that
    /// gained partitions: the engine stops, see `growth`).
    fn on_assigned(&self, assignment: &mut Assignment<'_>) {
        let mut partitions = assignment.partitions();
        if self.growth.assigned(&partitions) {
            partitions.retain(|(_, partition)| self.growth.within(*partition));
        }
        let _ = self.tx.send(Command::Assigned(partitions));
    }

    /// Tells the coordinator; waits for it (up to `revoke_wait`) only when the partitions
    /// were revoked in order, so their open transaction commits before they move.
    ///
    /// Lost partitions are not waited for: the coordinator only drops them and aborts what
    /// is open, which no one else needs to wait for (the next owner's restore waits for the
    /// open transaction to end). They are given up on at once ([`Overdue`]): the
    /// coordinator may be inside a commit whose next attempt would take the group metadata
    /// of the generation that follows (this member rejoins), under which the broker takes
    /// the lost partitions' offsets while their next owner (this member again, say) reads
    /// them from before the transaction and reacts to the same inputs again (seen: a broker
    /// frozen past the session timeout, each input of the transaction's written twice).
    /// Waiting held this hook, so the consumer's poll, for as long as
    /// the coordinator was inside a blocking transaction call, up to the call timeout at
    /// each step of its retries (seen: a lost revocation that took 22 s after a broker
    /// outage, the consumer deaf meanwhile, the repartition consumer of the same task too).
    fn on_revoked(&self, partitions: &[(String, i32)], lost: bool) {
        if lost {
            self.overdue.give_up(partitions);
        }
        let (ack, done) = std::sync::mpsc::channel();
        if self.tx.send(Command::Revoked { partitions: partitions.to_vec(), lost, ack }).is_err() || lost {
            return;
        }
        if done.recv_timeout(self.revoke_wait).is_err() {
            tracing::warn!(?partitions, "the coordinator did not finish the revocation in time: their open transaction will be aborted, not committed");
            self.overdue.give_up(partitions);
        }
    }

    fn open(&self, topic: &Arc<str>, partition: i32) -> Option<Self::Partition> {
        // Beyond the engine's count: its records wait for the engine that can take them.
        if !(self.readers.contains_key(&**topic) && self.growth.within(partition)) {
            return None;
        }
        // A hand-back of an earlier ownership is moot: the partition starts again from its
        // committed offset.
        self.handed_back.take(topic, partition);
        Some(EnginePartition { tx: self.tx.clone(), readers: self.readers.clone(), growth: self.growth.clone(), handed_back: self.handed_back.clone(), topic: topic.clone(), partition })
    }
}

/// One partition's part of the sink.
pub(crate) struct EnginePartition<I, S> {
    tx: mpsc::UnboundedSender<Command<I, S>>,
    readers: Arc<HashMap<String, Reader<I>>>,
    growth: Arc<Growth>,
    handed_back: Arc<HandedBack>,
    topic: Arc<str>,
    partition: i32,
}

impl<I, S: Send + 'static> EnginePartition<I, S> {
    /// Hands `held` to the coordinator and waits for its commit. False when interrupted.
    async fn submit(&self, held: Vec<Held<I>>, cancel: &CancellationToken) -> bool {
        let (reply, committed) = oneshot::channel();
        if self.tx.send(Command::Submit { partition: self.partition, held, reply }).is_err() {
            return false;
        }
        tokio::select! {
            result = committed => result.is_ok(),
            // Revoked or lost: the coordinator commits (revoked) or aborts (lost) what it holds.
            _ = cancel.cancelled() => false,
        }
    }
}

#[async_trait]
impl<I: Send + 'static, S: Send + 'static> PartitionSink for EnginePartition<I, S> {
    async fn deliver(&mut self, batch: &[OwnedRecord], _attempt: u32, progress: &Progress, cancel: &CancellationToken) -> Delivery {
        if cancel.is_cancelled() {
            return Delivery::Interrupted;
        }
        let Some(reader) = self.readers.get(&*self.topic) else { return Delivery::Interrupted };
        let mut held = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (index, record) in batch.iter().enumerate() {
            match reader.read(record) {
                Ok(decoded) => held.push(Held::Record { record: record.clone(), decoded: Some(decoded) }),
                // An unknown type the policy skips: its offset moves with the others'.
                Err(refused) if reader.skip(&refused.failure) => held.push(Held::Skip { topic: record.topic().to_owned(), partition: record.partition(), offset: record.offset() }),
                Err(refused) => {
                    failed = Some((index, refused));
                    break;
                }
            }
        }
        if !held.is_empty() {
            let count = held.len();
            if !self.submit(held, cancel).await {
                return Delivery::Interrupted;
            }
            let offsets = batch[0].offset()..=batch[count - 1].offset();
            if let Some((offset, failure)) = self.handed_back.take_among(&self.topic, self.partition, offsets)
                && let Some(index) = batch[..count].iter().position(|r| r.offset() == offset)
            {
                // The records before it are done; it and those after it come back: it is
                // dead-lettered by the worker, or its partition parked.
                for record in &batch[..index] {
                    progress.done(record.offset());
                }
                return Delivery::Failed { index, failure, class: FailureClass::Permanent };
            }
            for record in &batch[..count] {
                progress.done(record.offset());
            }
        }
        match failed {
            // Not dead-lettered when its topic gained partitions: the engine stops (see
            // `growth`), and the record waits for an engine that can take it; nor while
            // that cannot be told.
            Some((index, refused)) if refused.misplaced => match self.growth.check().await {
                Counts::Grown => Delivery::Interrupted,
                Counts::Unchanged => Delivery::Failed { index, failure: refused.failure, class: FailureClass::Permanent },
                Counts::Unknown => {
                    let reason = format!("{} (waiting: the topic's partition count could not be asked, to tell a misplaced record from an input that gained partitions)", refused.failure.reason);
                    Delivery::Failed { index, failure: Failure { reason, ..refused.failure }, class: FailureClass::Wait }
                }
            },
            Some((index, refused)) => Delivery::Failed { index, failure: refused.failure, class: FailureClass::Permanent },
            None => Delivery::Done,
        }
    }

    async fn dead_lettered(&mut self, record: &OwnedRecord, failure: &Failure) -> Result<(), Failure> {
        let skip = Held::Skip { topic: record.topic().to_owned(), partition: record.partition(), offset: record.offset() };
        if self.submit(vec![skip], &CancellationToken::new()).await {
            Ok(())
        } else {
            Err(Failure { reason: format!("the transaction moving past the dead letter did not commit ({})", failure.reason), ..failure.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sink(revoke_wait: Duration) -> (EngineSink<(), ()>, mpsc::UnboundedReceiver<Command<(), ()>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let growth = Arc::new(Growth::new(herald_bus::KafkaConfig::new("127.0.0.1:1"), Vec::new(), 1, CancellationToken::new(), Arc::default()));
        (EngineSink { tx, readers: Arc::default(), membership: Arc::default(), revoke_wait, overdue: Arc::default(), offsets: Offsets::Owned, growth, handed_back: Arc::default() }, rx)
    }

    #[test]
    fn a_hand_back_goes_to_the_submission_that_holds_it() {
        let handed = HandedBack::default();
        let failure = || Failure { stage: herald_bus::dead_letter::Stage::Handler, reason: "too large".into(), attempts: 1 };
        handed.put("t", 0, 10, failure());
        assert!(handed.take_among("t", 0, 0..=9).is_none(), "an earlier submission leaves it");
        assert!(handed.take_among("t", 1, 5..=15).is_none(), "another partition's");
        assert_eq!(handed.take_among("t", 0, 8..=12).map(|(offset, _)| offset), Some(10));
        assert!(handed.take_among("t", 0, 8..=12).is_none(), "taken once");
        handed.put("t", 0, 10, failure());
        assert!(handed.take_among("t", 0, 20..=30).is_none(), "a stale one (of an earlier ownership) is moot");
        assert!(handed.take("t", 0).is_none(), "and dropped");
    }

    #[test]
    fn a_lost_revocation_tells_the_coordinator_without_waiting_for_it() {
        // A coordinator busy in a blocking transaction call: it answers nothing.
        let (sink, mut rx) = sink(Duration::from_secs(30));
        let started = Instant::now();
        sink.on_revoked(&[("t".into(), 0)], true);
        assert!(started.elapsed() < Duration::from_secs(5), "the rebalance hook (the consumer's poll) waited {:?}", started.elapsed());
        assert!(matches!(rx.try_recv(), Ok(Command::Revoked { lost: true, .. })));
        assert_eq!(sink.overdue.take(), [("t".to_owned(), 0)], "given up on at once: no commit may take its offsets");
    }

    #[test]
    fn an_orderly_revocation_waits_for_the_commit_up_to_its_limit() {
        let (sink, mut rx) = sink(Duration::from_millis(300));
        let started = Instant::now();
        sink.on_revoked(&[("t".into(), 0)], false);
        assert!(started.elapsed() >= Duration::from_millis(300), "no answer: waited the limit");
        assert_eq!(sink.overdue.take(), vec![("t".to_owned(), 0)], "given up on: the coordinator must not commit it");
        assert!(sink.overdue.take().is_empty());
        // Answered: returns as soon as the coordinator acknowledges.
        let (sink, mut answered) = self::sink(Duration::from_secs(30));
        let coordinator = std::thread::spawn(move || {
            if let Some(Command::Revoked { ack, .. }) = answered.blocking_recv() {
                let _ = ack.send(());
            }
        });
        let started = Instant::now();
        sink.on_revoked(&[("t".into(), 0)], false);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(sink.overdue.take().is_empty(), "answered in time");
        coordinator.join().expect("coordinator thread");
        assert!(matches!(rx.try_recv(), Ok(Command::Revoked { lost: false, .. })));
    }
}
