//! Deadlines in the order of the inputs after a restore: a partition catching up.
//!
//! While an engine is down (or its partitions move), inputs keep arriving and deadlines
//! come due. When a partition is restored, its state may hold deadlines already due, and
//! its input partitions a backlog: records that arrived while no one reacted. Fired by
//! the timer at once, an overdue deadline would go before inputs that arrived before it
//! was due: a payment that came in time, read after the payment timeout fired, would be
//! refunded instead of taken.
//!
//! So a restore also measures the backlog ([`backlog`]): per input topic of the
//! partition, the offset of the last record below the last stable offset that the group
//! has not committed past. Until the engine has committed past each of those records, the
//! partition is **catching up** ([`CatchUp`]): the timer leaves its deadlines alone, and
//! before each of its inputs the deadlines due at or before that input's timestamp fire,
//! in the order they came due. Once caught up, the timer takes over again, so a deadline
//! due after the last backlogged input fires after it.
//!
//! An input's time is its record's timestamp (`CreateTime` by default: the producer's
//! clock; `LogAppendTime` if the topic says so), compared with deadlines set by the
//! engine's [`Clock`](super::Clock); the bound is never later than the engine's `now`.
//! A transaction that aborts puts its slots back, fired deadlines included, and the due
//! queue is rebuilt from them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_bus::runtime::Membership;
use herald_bus::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::restore::{is_end_of_partition, Quiet, CANCELLED};
use crate::slot::Slot;

/// A partition catching up: the last backlogged offset of each input topic not committed
/// past yet, and the deadlines of its restored state by due time.
#[derive(Debug)]
pub(crate) struct CatchUp {
    last: HashMap<String, i64>,
    due: VecDeque<(DateTime<Utc>, String)>,
}

impl CatchUp {
    /// A partition whose inputs have `backlog` (see [`backlog`]) and whose state is
    /// `slots`; `None` when there is no backlog.
    pub(crate) fn new<S>(backlog: HashMap<String, i64>, slots: &HashMap<String, Slot<S>>) -> Option<Self> {
        if backlog.is_empty() {
            return None;
        }
        let mut catch_up = CatchUp { last: backlog, due: VecDeque::new() };
        catch_up.reschedule(slots);
        Some(catch_up)
    }

    /// Rebuilds the due queue from `slots` (after a transaction put them back).
    pub(crate) fn reschedule<S>(&mut self, slots: &HashMap<String, Slot<S>>) {
        let mut due: Vec<(DateTime<Utc>, String)> = slots.iter().flat_map(|(key, slot)| slot.deadlines().iter().map(move |p| (p.deadline.at, key.clone()))).collect();
        due.sort();
        self.due = due.into();
    }

    /// The keys of the deadlines due at or before `bound`, one entry per deadline, in the
    /// order they came due; taken out of the queue.
    pub(crate) fn due_by(&mut self, bound: DateTime<Utc>) -> Vec<String> {
        let mut keys = Vec::new();
        while self.due.front().is_some_and(|(at, _)| *at <= bound) {
            if let Some((_, key)) = self.due.pop_front() {
                keys.push(key);
            }
        }
        keys
    }

    /// `next` (the next offset to read) of `topic` committed: true once every input
    /// topic is committed past its backlog.
    pub(crate) fn committed(&mut self, topic: &str, next: i64) -> bool {
        if self.last.get(topic).is_some_and(|last| next > *last) {
            self.last.remove(topic);
        }
        self.last.is_empty()
    }
}

/// The backlog of `partition` of each of `topics` for the group of `membership`: the
/// offset of the last record (read_committed) at or after the group's committed offset
/// (without one, the partition's start, or nothing when the consumer starts at the end:
/// `from_end`), for the topics that have one. Blocking: call it on a blocking thread.
pub(crate) fn backlog(
    config: &KafkaConfig,
    membership: &Membership,
    topics: &[String],
    partition: i32,
    from_end: bool,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<HashMap<String, i64>, String> {
    let deadline = Instant::now() + timeout;
    let asked: Vec<(String, i32)> = topics.iter().map(|t| (t.clone(), partition)).collect();
    let committed = membership.committed(&asked, timeout).map_err(|e| format!("the group's committed offsets: {e}"))?;
    let mut cc = config.client_config(&[]);
    cc.set("group.id", "herald-catch-up").set("enable.auto.commit", "false").set("isolation.level", "read_committed").set("enable.partition.eof", "true");
    let reader: BaseConsumer<Quiet> = cc.create_with_context(Quiet).map_err(|e| e.to_string())?;
    let mut last = HashMap::new();
    for (topic, committed) in topics.iter().zip(committed) {
        // read_committed: the "high" watermark is the last stable offset.
        let (low, stable) = reader.fetch_watermarks(topic, partition, timeout).map_err(|e| format!("{topic}/{partition}: watermarks: {e}"))?;
        let start = match committed {
            Some(next) => next.max(low),
            None if from_end => continue,
            None => low,
        };
        if start < stable
            && let Some(offset) = last_record(&reader, topic, partition, start, stable, deadline, cancel)?
        {
            last.insert(topic.clone(), offset);
        }
    }
    Ok(last)
}

/// The offset of the last record `reader` (read_committed) returns in `[start, stable)`:
/// read from a window before `stable`, wider each time nothing is found (commit markers
/// and aborted records take offsets too), down to `start`.
fn last_record(reader: &BaseConsumer<Quiet>, topic: &str, partition: i32, start: i64, stable: i64, deadline: Instant, cancel: &CancellationToken) -> Result<Option<i64>, String> {
    let fail = |e: String| format!("{topic}/{partition}: reading the backlog: {e}");
    let mut window = 64;
    loop {
        let from = (stable - window).max(start);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(|e| fail(e.to_string()))?;
        reader.assign(&tpl).map_err(|e| fail(e.to_string()))?;
        let mut found = None;
        loop {
            if cancel.is_cancelled() {
                return Err(CANCELLED.into());
            }
            if Instant::now() >= deadline {
                return Err(fail("timed out".into()));
            }
            match reader.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) if m.offset() < stable => found = Some(m.offset()),
                // Committed since the watermark was read: after the backlog.
                Some(Ok(_)) => break,
                Some(Err(e)) if is_end_of_partition(&e) => break,
                Some(Err(e)) => return Err(fail(e.to_string())),
            }
        }
        if found.is_some() || from == start {
            return Ok(found);
        }
        window *= 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadline::{Deadline, Pending};

    fn slot(deadlines: &[(&str, i64)]) -> Slot<()> {
        let pending = deadlines.iter().map(|(name, secs)| Pending { deadline: Deadline::at(*name, at(*secs)), correlation_id: String::new(), set_by: uuid::Uuid::nil() }).collect();
        Slot::from_parts((), pending, false)
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("time")
    }

    #[test]
    fn deadlines_come_out_in_due_order_up_to_each_bound_once() {
        let slots = HashMap::from([("a".to_owned(), slot(&[("x", 30), ("y", 10)])), ("b".to_owned(), slot(&[("x", 20)]))]);
        let mut catch_up = CatchUp::new(HashMap::from([("in".to_owned(), 5)]), &slots).expect("a backlog");
        assert!(catch_up.due_by(at(5)).is_empty(), "none due before the first");
        assert_eq!(catch_up.due_by(at(20)), ["a", "b"], "due at 10 and 20, in that order");
        assert_eq!(catch_up.due_by(at(25)), Vec::<String>::new(), "taken once");
        assert_eq!(catch_up.due_by(at(100)), ["a"]);
        // Put back (an aborted transaction): the queue follows the slots again.
        catch_up.reschedule(&slots);
        assert_eq!(catch_up.due_by(at(100)), ["a", "b", "a"]);
    }

    #[test]
    fn caught_up_once_every_topic_is_committed_past_its_last_backlogged_record() {
        let mut catch_up = CatchUp::new(HashMap::from([("in".to_owned(), 5), ("other".to_owned(), 9)]), &HashMap::<String, Slot<()>>::new()).expect("a backlog");
        assert!(!catch_up.committed("in", 5), "offset 5 not read yet");
        assert!(!catch_up.committed("in", 6), "the other topic still has its backlog");
        assert!(!catch_up.committed("unrelated", 100));
        assert!(catch_up.committed("other", 12));
        assert!(CatchUp::new(HashMap::new(), &HashMap::<String, Slot<()>>::new()).is_none(), "no backlog: nothing to catch up");
    }
}
