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
//! before each of its inputs the deadlines due by a *bound* fire, in due order, each with
//! its due time as the reaction's time. The bound is the input's own time, lowered to the
//! latest time seen on each other input topic that still has a backlog to deliver (a
//! topic not heard from yet allows nothing): so a deadline fires only once every input
//! that arrived before it, on every input topic of the partition, was reacted to. Once
//! caught up, the timer takes over again.
//!
//! An input's time is its record's timestamp (`CreateTime` by default: the producer's
//! clock; `LogAppendTime` if the topic says so; a repartitioned input's is the copy's),
//! compared with deadlines set by the engine's [`Clock`](super::Clock); a bound is never
//! later than the engine's `now`. Limits:
//! - the inputs of different topics are not merged by time, each topic's go in their own
//!   order: an input of a topic ahead of the others can go before a deadline that came due
//!   before it (never the other way round);
//! - a backlogged topic that delivers nothing for [`STALL`] (its partition stopped by a
//!   dead letter that cannot be written, its records deleted) stops holding the others
//!   back, and once none delivers, the timer takes over: deadlines are not held forever;
//! - a failed measurement restores the partition without catching up (the timer fires its
//!   deadlines at once, as before), with a warning;
//! - inputs of a repartitioned route still in their source topic (its copier was down too)
//!   are not part of the backlog.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_bus::runtime::Membership;
use herald_bus::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::restore::{is_end_of_partition, Quiet, CANCELLED};

/// How long a backlogged topic may deliver nothing before it stops holding back the
/// deadlines (see the [module docs](self)).
pub(crate) const STALL: Duration = Duration::from_secs(10);

/// A partition catching up: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct CatchUp {
    /// The last backlogged offset of each input topic not committed past yet.
    last: HashMap<String, i64>,
    /// What its inputs reacted to so far showed (kept per transaction, see [`Marks`]).
    marks: Marks,
    /// When the catch-up began.
    began: Instant,
}

/// How far each backlogged topic got: the latest time seen, and whether its last
/// backlogged record was reacted to (the topic then holds nothing back).
#[derive(Debug, Clone, Default)]
pub(crate) struct Marks {
    seen: HashMap<String, (DateTime<Utc>, Instant)>,
    delivered: HashSet<String>,
}

impl CatchUp {
    /// A partition whose inputs have `backlog` (see [`backlog`]); `None` when there is
    /// none.
    pub(crate) fn new(backlog: HashMap<String, i64>) -> Option<Self> {
        (!backlog.is_empty()).then(|| CatchUp { last: backlog, marks: Marks::default(), began: Instant::now() })
    }

    /// An input of `topic` at `offset` with time `time` (never later than now) is about to
    /// be reacted to: the bound up to which deadlines fire before it (`None`: none may).
    pub(crate) fn before_input(&mut self, topic: &str, offset: i64, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let now = Instant::now();
        let seen = self.marks.seen.entry(topic.to_owned()).or_insert((time, now));
        *seen = (seen.0.max(time), now);
        self.reached(topic, offset);
        let mut bound = time;
        for other in self.last.keys().filter(|other| *other != topic && !self.marks.delivered.contains(*other)) {
            match self.marks.seen.get(other) {
                // Stalled (nothing delivered for a while): it no longer holds back.
                Some((_, heard)) if heard.elapsed() >= STALL => {}
                Some((seen, _)) => bound = bound.min(*seen),
                // Not heard from since the catch-up began: it holds back, unless stalled.
                None if self.began.elapsed() < STALL => return None,
                None => {}
            }
        }
        Some(bound)
    }

    /// A record of `topic` at `offset` was dead-lettered (no time to go by): it may be the
    /// topic's last backlogged one.
    pub(crate) fn skipped(&mut self, topic: &str, offset: i64) {
        self.reached(topic, offset);
        if let Some((_, heard)) = self.marks.seen.get_mut(topic) {
            *heard = Instant::now();
        }
    }

    /// `topic` got to `offset`: past its backlog once at its last backlogged record.
    fn reached(&mut self, topic: &str, offset: i64) {
        if self.last.get(topic).is_some_and(|last| offset >= *last) {
            self.marks.delivered.insert(topic.to_owned());
        }
    }

    /// Whether every backlogged topic has either delivered its backlog or delivered
    /// nothing for [`STALL`]: the timer may take over.
    pub(crate) fn stalled(&self) -> bool {
        self.began.elapsed() >= STALL
            && self.last.keys().filter(|topic| !self.marks.delivered.contains(*topic)).all(|topic| self.marks.seen.get(topic).is_none_or(|(_, at)| at.elapsed() >= STALL))
    }

    /// The marks now, to put back if the transaction aborts.
    pub(crate) fn marks(&self) -> Marks {
        self.marks.clone()
    }

    /// Puts back the marks of a transaction's start (it aborted: its inputs go again).
    pub(crate) fn rewind(&mut self, marks: Marks) {
        self.marks = marks;
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
    if cancel.is_cancelled() {
        return Err(CANCELLED.into());
    }
    let mut cc = config.client_config(&[]);
    cc.set("group.id", "herald-catch-up")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let reader: BaseConsumer<Quiet> = cc.create_with_context(Quiet).map_err(|e| e.to_string())?;
    let mut last = HashMap::new();
    for (topic, committed) in topics.iter().zip(committed) {
        // read_committed: the "high" watermark is the last stable offset.
        let left = deadline.saturating_duration_since(Instant::now());
        let (low, stable) = reader.fetch_watermarks(topic, partition, left).map_err(|e| format!("{topic}/{partition}: watermarks: {e}"))?;
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

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("time")
    }

    #[test]
    fn a_deadline_waits_for_every_backlogged_topic_to_pass_its_time() {
        let mut catch_up = CatchUp::new(HashMap::from([("orders".to_owned(), 10), ("payments".to_owned(), 20)])).expect("a backlog");
        // Orders are ahead; payments not heard from yet: nothing may fire.
        assert_eq!(catch_up.before_input("orders", 3, at(50)), None);
        // A payment at 30: deadlines up to 30 may go before it (orders got to 50).
        assert_eq!(catch_up.before_input("payments", 15, at(30)), Some(at(30)));
        // The next order, at 60: payments only got to 30.
        assert_eq!(catch_up.before_input("orders", 4, at(60)), Some(at(30)));
        // Payments' last backlogged record: it no longer holds the orders back.
        assert_eq!(catch_up.before_input("payments", 20, at(40)), Some(at(40)));
        assert_eq!(catch_up.before_input("orders", 5, at(70)), Some(at(70)));
    }

    #[test]
    fn an_aborted_transaction_puts_the_marks_back() {
        let mut catch_up = CatchUp::new(HashMap::from([("a".to_owned(), 10), ("b".to_owned(), 10)])).expect("a backlog");
        let marks = catch_up.marks();
        assert_eq!(catch_up.before_input("b", 10, at(5)), None, "a not heard from");
        assert_eq!(catch_up.before_input("a", 1, at(9)), Some(at(9)), "b delivered its backlog");
        catch_up.rewind(marks);
        assert_eq!(catch_up.before_input("a", 1, at(9)), None, "b again not heard from");
    }

    #[test]
    fn caught_up_once_every_topic_is_committed_past_its_last_backlogged_record() {
        let mut catch_up = CatchUp::new(HashMap::from([("in".to_owned(), 5), ("other".to_owned(), 9)])).expect("a backlog");
        assert!(!catch_up.committed("in", 5), "offset 5 not read yet");
        assert!(!catch_up.committed("in", 6), "the other topic still has its backlog");
        assert!(!catch_up.committed("unrelated", 100));
        assert!(catch_up.committed("other", 12));
        assert!(CatchUp::new(HashMap::new()).is_none(), "no backlog: nothing to catch up");
        assert!(!CatchUp::new(HashMap::from([("in".to_owned(), 5)])).expect("a backlog").stalled(), "just began");
    }
}
