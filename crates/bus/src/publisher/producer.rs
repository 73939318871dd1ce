//! The rdkafka producer under a [`Publisher`](super::Publisher): delivery reports that
//! release in-flight slots themselves, and replacement after a fatal error.
//!
//! Each queued record carries a [`Pending`] as its delivery opaque: the channel its
//! acknowledgement goes to, and its in-flight slot. librdkafka's delivery callback sends
//! the result and drops the slot, so a place frees up the moment the broker answers,
//! whether or not anyone awaits that record's future. (Releasing it in the awaiting
//! future instead deadlocks a caller that queues more than the limit before collecting.)

use std::sync::{Arc, RwLock};

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use tokio::sync::{oneshot, Notify};

use super::in_flight::Slot;

/// The outcome of one send: `(partition, offset)`, or the error and the record.
pub(crate) type Delivery = Result<(i32, i64), (KafkaError, OwnedMessage)>;

/// What travels with a queued record until its delivery report.
pub struct Pending {
    pub(crate) tx: oneshot::Sender<Delivery>,
    pub(crate) _slot: Slot,
}

/// The producer context: routes delivery reports, signals freed queue space, and keeps the
/// client's last error.
pub struct DeliveryContext {
    pub(crate) space: Arc<Notify>,
    pub(crate) last_error: Arc<LastError>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        self.last_error.set(format!("{error}: {reason}"));
    }
}

/// The client's most recent error (a failed SASL authentication, a TLS handshake, a broker
/// that cannot be reached) and when it happened. librdkafka reports such errors only to
/// the context and keeps retrying, so a record's delivery later fails with nothing but
/// "Message timed out"; the publisher attaches this to that failure.
#[derive(Debug, Default)]
pub(crate) struct LastError(std::sync::Mutex<Option<(std::time::Instant, String)>>);

impl LastError {
    fn set(&self, message: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), message));
    }

    /// The last error if it happened after `since`.
    pub(crate) fn since(&self, since: std::time::Instant) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|(at, _)| *at >= since).map(|(_, m)| m.clone())
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, m)) => Err((e.clone(), m.detach())),
        };
        let Pending { tx, _slot } = *pending;
        let _ = tx.send(outcome);
        drop(_slot);
        self.space.notify_waiters();
    }
}

/// The producer type a publisher runs on.
pub type Producer = ThreadedProducer<DeliveryContext>;

/// The current producer, replaced when it hits a fatal error.
///
/// An idempotent producer that loses track of its sequence numbers (for example
/// `OUT_OF_ORDER_SEQUENCE_NUMBER` after a broker lost acknowledged data) raises a fatal
/// error and fails every later send. The failed sends come back as retryable
/// [`PublishError::Delivery`](super::PublishError::Delivery) errors (republish with the
/// same event id; consumers dedupe on `ce_id`), and the next send uses a fresh producer.
pub(crate) struct ProducerSlot {
    current: RwLock<Arc<Producer>>,
    config: rdkafka::ClientConfig,
    pub(crate) space: Arc<Notify>,
    pub(crate) last_error: Arc<LastError>,
}

impl ProducerSlot {
    pub(crate) fn new(config: rdkafka::ClientConfig) -> Result<Self, KafkaError> {
        let space = Arc::new(Notify::new());
        let last_error = Arc::new(LastError::default());
        let producer = config.create_with_context(DeliveryContext { space: space.clone(), last_error: last_error.clone() })?;
        Ok(ProducerSlot { current: RwLock::new(Arc::new(producer)), config, space, last_error })
    }

    pub(crate) fn current(&self) -> Arc<Producer> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces `failed` with a new producer if it is in a fatal state and still current.
    pub(crate) fn replace_if_fatal(&self, failed: &Producer) {
        let Some((code, reason)) = failed.client().fatal_error() else { return };
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.client().native_ptr() != failed.client().native_ptr() {
            return; // Someone replaced it already.
        }
        match self.config.create_with_context(DeliveryContext { space: self.space.clone(), last_error: self.last_error.clone() }) {
            Ok(fresh) => {
                tracing::error!(?code, reason, "producer hit a fatal error; replaced it with a new one");
                metrics::counter!("herald_producer_replaced_total").increment(1);
                let old = std::mem::replace(&mut *current, Arc::new(fresh));
                // Dropping joins librdkafka's threads: not on this (maybe async) thread.
                std::thread::spawn(move || drop(old));
            }
            Err(e) => tracing::error!(error = %e, "producer hit a fatal error and a new one cannot be created"),
        }
    }
}
