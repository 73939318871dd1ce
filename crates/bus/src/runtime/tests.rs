//! The runtime's core, without a network: a partition worker driven by a scripted sink,
//! dead letters and client, on tokio's paused clock.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dead_letter::{Letters, Sent};
use super::worker::{Client, Slot, Worker};
use super::*;
use crate::consumer::record::{OwnedRecord, Recycler};
use crate::dead_letter::{Failure, Stage};

/// A sink that answers each delivery attempt of a record from a script (then succeeds),
/// and remembers what it saw and when.
#[derive(Default, Clone)]
struct Scripted {
    script: Arc<Mutex<std::collections::HashMap<i64, VecDeque<FailureClass>>>>,
    seen: Arc<Mutex<Vec<(i64, u32, Instant)>>>,
    /// How many times recording a dead letter fails before it succeeds.
    note_failures: Arc<AtomicUsize>,
    /// Dead letters recorded.
    noted: Arc<Mutex<Vec<i64>>>,
}

impl Scripted {
    fn failing(offset: i64, classes: &[FailureClass]) -> Self {
        let s = Scripted::default();
        s.script.lock().unwrap().insert(offset, classes.iter().copied().collect());
        s
    }
}

#[async_trait]
impl PartitionSink for Scripted {
    async fn deliver(&mut self, batch: &[OwnedRecord], attempt: u32, progress: &Progress, _cancel: &CancellationToken) -> Delivery {
        for (index, r) in batch.iter().enumerate() {
            let attempt = if index == 0 { attempt } else { 1 };
            self.seen.lock().unwrap().push((r.offset(), attempt, Instant::now()));
            let next = self.script.lock().unwrap().get_mut(&r.offset()).and_then(VecDeque::pop_front);
            if let Some(class) = next {
                let failure = Failure { stage: Stage::Handler, reason: format!("scripted {class:?}"), attempts: attempt };
                return Delivery::Failed { index, failure, class };
            }
            progress.done(r.offset());
        }
        Delivery::Done
    }

    async fn dead_lettered(&mut self, record: &OwnedRecord, _failure: &Failure) -> Result<(), Failure> {
        use std::sync::atomic::Ordering;
        if self.note_failures.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
            return Err(Failure { stage: Stage::Handler, reason: "the store is down".into(), attempts: 1 });
        }
        self.noted.lock().unwrap().push(record.offset());
        Ok(())
    }
}

/// Dead letters that answer with a fixed result, and count.
struct FakeLetters {
    unwritable: bool,
    sent: Mutex<Vec<(i64, u32)>>,
    /// How long each letter takes to be written (retried meanwhile, as a missing topic).
    delay: Duration,
}

#[async_trait]
impl Letters for FakeLetters {
    async fn send(&self, record: &OwnedRecord, failure: &Failure, _cancel: &CancellationToken) -> Sent {
        tokio::time::sleep(self.delay).await;
        self.sent.lock().unwrap().push((record.offset(), failure.attempts));
        if self.unwritable { Sent::Unwritable("record too large for the dead-letter topic".into()) } else { Sent::Acked }
    }
}

#[derive(Default)]
struct FakeClient {
    stored: Mutex<Vec<i64>>,
    paused: Mutex<Vec<i32>>,
}

impl Client for FakeClient {
    fn store_completed(&self, _topic: &str, _partition: i32, completed: i64) {
        self.stored.lock().unwrap().push(completed);
    }
    fn pause_partition(&self, _topic: &str, partition: i32) {
        self.paused.lock().unwrap().push(partition);
    }
}

struct Harness {
    slot: Slot,
    letters: Arc<FakeLetters>,
    client: Arc<FakeClient>,
    health: Arc<ConsumerHealth>,
    topic: Arc<str>,
}

fn policy() -> RetryPolicy {
    RetryPolicy { max_attempts: 3, initial: Duration::from_millis(100), max: Duration::from_secs(10), multiplier: 2.0, jitter: 0.0 }
}

fn start(sink: Scripted, unwritable: bool) -> Harness {
    start_with(sink, FakeLetters { unwritable, sent: Mutex::default(), delay: Duration::ZERO })
}

fn start_with(sink: Scripted, letters: FakeLetters) -> Harness {
    let letters = Arc::new(letters);
    let client = Arc::new(FakeClient::default());
    let health = Arc::new(ConsumerHealth::default());
    health.set_running(true);
    let topic: Arc<str> = Arc::from("t");
    let worker = Worker {
        sink,
        letters: letters.clone(),
        client: client.clone(),
        offsets: Offsets::Stored,
        retry: policy(),
        health: health.clone(),
        total: Arc::new(AtomicUsize::new(0)),
        recycler: Arc::new(Recycler::default()),
        topic: topic.clone(),
        partition: 0,
        waiting: Arc::default(),
    };
    let slot = worker.spawn(0);
    Harness { slot, letters, client, health, topic }
}

impl Harness {
    fn send(&self, offsets: std::ops::Range<i64>) {
        let batch = offsets.map(|o| OwnedRecord::for_test(&self.topic, 0, o, b"x")).collect();
        self.slot.tx.send(batch).expect("worker running");
    }

    async fn wait_stored(&self, offset: i64) {
        let deadline = Instant::now() + Duration::from_secs(3600);
        while self.slot.progress.completed() != Some(offset) || self.client.stored.lock().unwrap().last() != Some(&offset) {
            assert!(Instant::now() < deadline, "offset {offset} never stored");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_record_is_retried_alone_with_backoff_then_the_batch_goes_on() {
    let sink = Scripted::failing(1, &[FailureClass::Retry, FailureClass::Retry]);
    let h = start(sink.clone(), false);
    let started = Instant::now();
    h.send(0..3);
    h.wait_stored(2).await;
    let seen = sink.seen.lock().unwrap().clone();
    let attempts: Vec<(i64, u32)> = seen.iter().map(|(o, a, _)| (*o, *a)).collect();
    assert_eq!(attempts, vec![(0, 1), (1, 1), (1, 2), (1, 3), (2, 1)], "record 0 is not delivered again");
    let waits: Vec<Duration> = seen.iter().map(|(_, _, t)| t.duration_since(started)).collect();
    assert_eq!(waits[2], Duration::from_millis(100), "first retry after the initial backoff");
    assert_eq!(waits[3], Duration::from_millis(300), "second after twice as long");
    assert!(h.letters.sent.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn out_of_attempts_a_record_is_dead_lettered_and_passed() {
    let sink = Scripted::failing(1, &[FailureClass::Retry; 3]);
    let h = start(sink.clone(), false);
    h.send(0..3);
    h.wait_stored(2).await;
    assert_eq!(*h.letters.sent.lock().unwrap(), vec![(1, 3)], "dead-lettered once, after 3 attempts");
    let permanent = Scripted::failing(0, &[FailureClass::Permanent]);
    let h = start(permanent.clone(), false);
    h.send(0..2);
    h.wait_stored(1).await;
    assert_eq!(*h.letters.sent.lock().unwrap(), vec![(0, 1)], "a permanent failure is not retried");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_something_unavailable_uses_no_attempts() {
    let sink = Scripted::failing(0, &[FailureClass::Wait; 20]);
    let h = start(sink.clone(), false);
    h.send(0..1);
    h.wait_stored(0).await;
    assert!(h.letters.sent.lock().unwrap().is_empty(), "20 waits and no dead letter");
    assert!(sink.seen.lock().unwrap().iter().all(|(_, attempt, _)| *attempt == 1));
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_that_cannot_be_written_parks_the_partition_instead_of_looping() {
    let sink = Scripted::failing(1, &[FailureClass::Permanent]);
    let h = start(sink.clone(), true);
    h.send(0..3);
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.health.parked().is_empty() {
        assert!(Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!h.health.is_healthy());
    assert!(h.health.parked()[0].2.contains("too large"), "{:?}", h.health.parked());
    assert_eq!(*h.client.paused.lock().unwrap(), vec![0], "the partition is paused");
    assert!(h.slot.waiting.load(std::sync::atomic::Ordering::Acquire), "marked waiting: a shutdown stops it at once");
    // An hour later: no second attempt, nothing stored past the record.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.letters.sent.lock().unwrap().len(), 1, "never retried in a loop");
    assert_eq!(h.slot.progress.completed(), Some(0));
    assert_eq!(h.client.stored.lock().unwrap().last(), Some(&0));
    // Revocation or shutdown releases it: the next owner meets the record again.
    h.slot.cancel.cancel();
    h.slot.task.await.expect("worker ends");
    assert!(h.health.is_healthy());
    assert_eq!(sink.seen.lock().unwrap().iter().filter(|(o, _, _)| *o == 2).count(), 0, "nothing after the parked record");
}

/// A dead letter that takes long to write (retried: its topic missing, the broker away)
/// holds its partition back: the health check says so while it waits, and all is well
/// again once it is written. Before, the consumer stayed healthy for as long as it waited.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_not_written_for_a_while_makes_the_consumer_unhealthy_until_it_is() {
    let sink = Scripted::failing(1, &[FailureClass::Permanent]);
    let h = start_with(sink.clone(), FakeLetters { unwritable: false, sent: Mutex::default(), delay: Duration::from_secs(60) });
    let started = Instant::now();
    h.send(0..3);
    while h.health.parked().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "never reported");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let late = started.elapsed();
    assert!(late >= super::worker::LETTER_STALLED && late < super::worker::LETTER_STALLED + Duration::from_secs(1), "reported once the letter is late: {late:?}");
    assert!(!h.health.is_healthy());
    let reason = &h.health.parked()[0].2;
    assert!(reason.contains("offset 1") && reason.contains("t.dlq") && reason.contains("not written"), "{reason}");
    assert!(h.slot.waiting.load(std::sync::atomic::Ordering::Acquire), "marked waiting while the letter is late");
    h.wait_stored(2).await;
    assert!(h.health.is_healthy(), "written at last: {:?}", h.health.parked());
    assert!(!h.slot.waiting.load(std::sync::atomic::Ordering::Acquire), "no longer waiting once it is written");
    assert_eq!(*h.letters.sent.lock().unwrap(), vec![(1, 1)]);
}

/// A sink whose store cannot record a dead letter for a while: the letter is written once,
/// and only the sink's note of it is retried (before, the record was delivered and
/// dead-lettered again on every retry, for as long as the store was down).
#[tokio::test(start_paused = true)]
async fn a_dead_letter_the_sink_cannot_record_yet_is_written_once() {
    let sink = Scripted::failing(1, &[FailureClass::Permanent]);
    sink.note_failures.store(5, std::sync::atomic::Ordering::Release);
    let h = start(sink.clone(), false);
    h.send(0..3);
    h.wait_stored(2).await;
    assert_eq!(*h.letters.sent.lock().unwrap(), vec![(1, 1)], "one dead letter");
    assert_eq!(*sink.noted.lock().unwrap(), vec![1], "recorded once it could be");
    let deliveries_of_1 = sink.seen.lock().unwrap().iter().filter(|(o, _, _)| *o == 1).count();
    assert_eq!(deliveries_of_1, 1, "the record is not delivered again");
}
