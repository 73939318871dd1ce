//! The rdkafka producer under a [`Publisher`](super::Publisher): delivery reports that
//! release in-flight slots themselves, and the client's errors kept for the sends.
//!
//! Each queued record carries a [`Pending`] as its delivery opaque: the channel its
//! acknowledgement goes to, its in-flight slot, and its topic's metrics. librdkafka's
//! delivery callback records the send's latency (from taking the in-flight place to the
//! delivery report: librdkafka's linger and queueing included) and outcome, sends the
//! result and drops the slot, so a place frees up the moment the broker answers, whether
//! or not anyone awaits that record's future yet. (Releasing it in the
//! awaiting future instead deadlocks a caller that queues more than the limit before
//! collecting.)

use std::sync::Arc;
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use tokio::sync::{oneshot, Notify};

use super::fatal::Fatal;
use super::in_flight::Slot;
use crate::last_error::LastError;
use super::metrics_cache::TopicMetrics;

/// The outcome of one send: `(partition, offset)`, or the error and the record.
pub(crate) type Report = Result<(i32, i64), (KafkaError, OwnedMessage)>;

/// What travels with a queued record until its delivery report.
pub struct Pending {
    pub(crate) tx: oneshot::Sender<Report>,
    pub(crate) _slot: Slot,
    /// When the record was queued, for `herald_publish_seconds`.
    pub(crate) started: Instant,
    pub(crate) metrics: Arc<TopicMetrics>,
}

/// The producer context: routes delivery reports, signals freed queue space, and keeps the
/// client's last error.
pub struct DeliveryContext {
    pub(crate) space: Arc<Notify>,
    pub(crate) last_error: Arc<LastError>,
    /// This producer's fatal error, once a send saw it (each producer has its own).
    pub(crate) fatal: Arc<Fatal>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // A fatal error arrives here with its own code (for example
        // OUT_OF_ORDER_SEQUENCE_NUMBER), not as ERR__FATAL: the sends ask the client
        // whether it is fatal (see `Fatal::check`).
        tracing::warn!(%error, reason, "kafka client error");
        self.last_error.set(format!("{error}: {reason}"));
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, m)) => Err((e.clone(), m.detach())),
        };
        let Pending { tx, _slot, started, metrics } = *pending;
        metrics.seconds.record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(_) => metrics.published.increment(1),
            Err(_) => metrics.failures.increment(1),
        }
        let _ = tx.send(outcome);
        drop(_slot);
        self.space.notify_waiters();
    }
}

/// The producer type a publisher runs on.
pub type Producer = ThreadedProducer<DeliveryContext>;
