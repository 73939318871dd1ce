//! The dead-letter layer: where records go that a sink cannot take.
//!
//! The worker asks its [`Letters`] to write the record with the failure's reason; only
//! once the broker acknowledged it does the partition move past the record. Errors that
//! can heal are retried (the broker away, a leader moving); a dead letter that can never be
//! written (too large for the dead-letter topic, not authorized) is not retried: the
//! worker parks its partition (see [`ConsumerHealth::parked`](super::ConsumerHealth::parked)).

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::consumer::OwnedRecord;
use crate::dead_letter::{self, Failure, NotSent};
use crate::publisher::Publisher;

/// What became of a dead letter.
#[derive(Debug)]
pub enum Sent {
    /// Acknowledged by the broker: move past the original record.
    Acked,
    /// Cancelled (revocation, shutdown) before it was acknowledged: do not move past it.
    Cancelled,
    /// It can never be written as it is (the reason says why): park the partition.
    Unwritable(String),
    /// Not written: an operator asked for the record to be delivered again (a policy that
    /// stops at poison records instead of dead-lettering them).
    Retry,
}

/// Where a worker's dead letters go. [`DeadLetters`] writes them to `<topic>.dlq`; tests
/// plug in a fake.
#[async_trait]
pub trait Letters: Send + Sync + 'static {
    /// Writes the dead letter of `record`, retrying what can heal until `cancel` fires.
    async fn send(&self, record: &OwnedRecord, failure: &Failure, cancel: &CancellationToken) -> Sent;

    /// Waits for what is queued to be written (at shutdown).
    async fn flush(&self) {}

    /// Why a [`Letters::send`] of `record` that takes long waits on purpose (for an
    /// operator, say): the worker logs it and reports nothing else. `None` (the default)
    /// means the letter is not written yet, a fault (its topic missing, the broker away):
    /// the worker reports the partition parked, unhealthy, until it is written.
    fn waiting_for(&self, record: &OwnedRecord, failure: &Failure) -> Option<String> {
        let _ = (record, failure);
        None
    }
}

/// Dead letters to `<topic>.dlq` through a publisher, in the name of a consumer group.
#[derive(Clone)]
pub struct DeadLetters {
    /// The producer (its in-flight limit bounds what waits).
    pub publisher: Publisher,
    /// The group named in `herald.dlq.group`.
    pub group: String,
}

#[async_trait]
impl Letters for DeadLetters {
    async fn send(&self, msg: &OwnedRecord, failure: &Failure, cancel: &CancellationToken) -> Sent {
        let record = dead_letter::record(&msg.to_message(), failure, &self.group, &dead_letter::topic_for(msg.topic()));
        match dead_letter::send_until_acked(&self.publisher, &record, cancel).await {
            Ok(()) => {
                metrics::counter!("herald_consumer_dead_lettered_total", "topic" => msg.topic().to_owned(), "stage" => failure.stage.as_str()).increment(1);
                tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), stage = failure.stage.as_str(), reason = %failure.reason, "dead-lettered");
                Sent::Acked
            }
            Err(NotSent::Cancelled) => Sent::Cancelled,
            Err(NotSent::Unwritable(e)) => Sent::Unwritable(e.to_string()),
        }
    }

    async fn flush(&self) {
        if let Err(e) = self.publisher.flush(std::time::Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "dead-letter producer flush failed");
        }
    }
}
