//! One worker task per assigned partition: records of a partition are handled one after the
//! other (so per-key order holds), partitions run concurrently.
//!
//! The worker stores a record's offset only after the record was handled, skipped by
//! policy, or written to the dead-letter topic. Since it works serially, the stored offset is
//! always the contiguous completed one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::route::{Outcome, Route};
use crate::dead_letter::{self, Failure};
use crate::publisher::Publisher;

/// The main loop's handle on a partition worker.
pub(crate) struct Slot {
    /// Records for the worker; bounded, so a slow partition is paused instead of growing.
    pub tx: mpsc::Sender<OwnedMessage>,
    /// Stops the worker after its current record.
    pub cancel: CancellationToken,
    /// Signalled when the worker exits.
    pub done: std::sync::mpsc::Receiver<()>,
    /// Aborts the worker when it does not stop in time: its current record is then not
    /// stored, so it is processed again (at least once), and no zombie outlives it.
    pub abort: tokio::task::AbortHandle,
    /// Records received while the worker's queue was full (the partition is then paused).
    pub stash: VecDeque<OwnedMessage>,
    /// True while the partition is paused in the client.
    pub paused: bool,
    /// Next offset expected from the client; lower ones are duplicates after a resume.
    pub next_offset: i64,
}

/// Where failed records go.
#[derive(Clone)]
pub(crate) struct DeadLetters {
    pub publisher: Publisher,
    pub group: String,
}

impl DeadLetters {
    /// Writes the dead-letter record, retrying until it is acknowledged (nothing is lost
    /// while the broker is away) or the worker is cancelled (then returns false and the
    /// offset is not stored, so the record is processed again later).
    async fn send(&self, msg: &OwnedMessage, failure: &Failure, cancel: &CancellationToken) -> bool {
        let record = dead_letter::record(msg, failure, &self.group, &dead_letter::topic_for(msg.topic()));
        let mut retry = 0u32;
        loop {
            match self.publisher.send_record(record.clone()).await {
                Ok(_) => {
                    metrics::counter!("herald_consumer_dead_lettered_total", "topic" => msg.topic().to_owned(), "stage" => failure.stage.as_str())
                        .increment(1);
                    tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), stage = failure.stage.as_str(), reason = %failure.reason, "dead-lettered");
                    return true;
                }
                Err(e) => {
                    retry += 1;
                    tracing::error!(topic = msg.topic(), offset = msg.offset(), error = %e, retry, "cannot write dead letter; retrying");
                    let backoff = Duration::from_millis(100u64.saturating_mul(1 << retry.min(8))).min(Duration::from_secs(30));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// Sends `()` when dropped, so the rebalance hook learns the worker is gone even if it
/// panicked.
struct DoneGuard(std::sync::mpsc::SyncSender<()>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// Starts a worker for one partition.
pub(crate) fn spawn(
    route: Arc<dyn Route>,
    consumer: Arc<StreamConsumer<Context>>,
    dead_letters: DeadLetters,
    capacity: usize,
    next_offset: i64,
) -> Slot {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (done_tx, done) = std::sync::mpsc::sync_channel(1);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(route, consumer, dead_letters, rx, cancel.clone(), DoneGuard(done_tx)));
    Slot { tx, cancel, done, abort: task.abort_handle(), stash: VecDeque::new(), paused: false, next_offset }
}

async fn run(
    route: Arc<dyn Route>,
    consumer: Arc<StreamConsumer<Context>>,
    dead_letters: DeadLetters,
    mut rx: mpsc::Receiver<OwnedMessage>,
    cancel: CancellationToken,
    _done: DoneGuard,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
        };
        let topic = msg.topic().to_owned();
        let outcome = match route.process(&msg, &cancel).await {
            Outcome::Handled => "handled",
            Outcome::Skipped => "skipped",
            Outcome::Failed(failure) => {
                if !dead_letters.send(&msg, &failure, &cancel).await {
                    return;
                }
                "dead_lettered"
            }
            Outcome::Interrupted => return,
        };
        metrics::counter!("herald_consumer_events_total", "topic" => topic, "outcome" => outcome).increment(1);
        // Fails with ERR__STATE when the partition was revoked meanwhile: the new owner
        // processes the record again (at least once), so the error is only logged.
        if let Err(e) = consumer.store_offset(msg.topic(), msg.partition(), msg.offset()) {
            tracing::debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "offset not stored");
        }
    }
}
