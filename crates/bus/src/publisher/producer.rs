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

/// The producer context: routes delivery reports and signals freed queue space.
pub struct DeliveryContext {
    pub(crate) space: Arc<Notify>,
}

impl ClientContext for DeliveryContext {}

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
}

impl ProducerSlot {
    pub(crate) fn new(config: rdkafka::ClientConfig) -> Result<Self, KafkaError> {
        let space = Arc::new(Notify::new());
        let producer = config.create_with_context(DeliveryContext { space: space.clone() })?;
        Ok(ProducerSlot { current: RwLock::new(Arc::new(producer)), config, space })
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
        match self.config.create_with_context(DeliveryContext { space: self.space.clone() }) {
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
