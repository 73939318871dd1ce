//! [`ProducerSlot`]: the publisher's current producer, replaced only on request after a
//! fatal error.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer as _, PurgeConfig};
use rdkafka::util::Timeout;
use tokio::sync::Notify;

use crate::last_error::LastError;
use super::producer::{DeliveryContext, Producer};

/// The current producer.
///
/// An idempotent producer that loses track of its sequence numbers (for example
/// `OUT_OF_ORDER_SEQUENCE_NUMBER` after a broker lost acknowledged data) raises a fatal
/// error: librdkafka purges what is queued and refuses later sends. The slot keeps that
/// producer, so every send keeps failing with
/// [`PublishError::Fatal`](super::PublishError::Fatal), until [`ProducerSlot::reset`]
/// drains it and puts a new one in its place.
pub(crate) struct ProducerSlot {
    current: RwLock<Arc<Producer>>,
    config: rdkafka::ClientConfig,
    /// One reset at a time.
    resetting: tokio::sync::Mutex<()>,
    pub(crate) space: Arc<Notify>,
    pub(crate) last_error: Arc<LastError>,
}

impl ProducerSlot {
    pub(crate) fn new(config: rdkafka::ClientConfig) -> Result<Self, KafkaError> {
        let space = Arc::new(Notify::new());
        let last_error = Arc::new(LastError::default());
        let producer = Self::create(&config, &space, &last_error)?;
        Ok(ProducerSlot { current: RwLock::new(Arc::new(producer)), config, resetting: tokio::sync::Mutex::new(()), space, last_error })
    }

    fn create(config: &rdkafka::ClientConfig, space: &Arc<Notify>, last_error: &Arc<LastError>) -> Result<Producer, KafkaError> {
        config.create_with_context(DeliveryContext { space: space.clone(), last_error: last_error.clone(), fatal: Arc::default() })
    }

    pub(crate) fn current(&self) -> Arc<Producer> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the current producer if it hit a fatal error: first every record it still
    /// holds gets its delivery report (in flight: the broker's answer, waited for up to
    /// `drain`; then what is left is purged), so no send of the old producer is still
    /// open when the first send of the new one is made. True if it replaced it.
    pub(crate) async fn reset(&self, drain: Duration) -> Result<bool, KafkaError> {
        let _one = self.resetting.lock().await;
        let old = self.current();
        if old.context().fatal.check(&old).is_none() {
            return Ok(false);
        }
        let fresh = Self::create(&self.config, &self.space, &self.last_error)?;
        let draining = old.clone();
        // flush and purge block: not on an async worker.
        tokio::task::spawn_blocking(move || {
            let _ = draining.flush(Timeout::After(drain));
            draining.purge(PurgeConfig::default().queue().inflight());
            let _ = draining.flush(Timeout::After(Duration::from_secs(1)));
        })
        .await
        .map_err(|_| KafkaError::Canceled)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        metrics::counter!("herald_producer_replaced_total").increment(1);
        tracing::warn!("replaced the producer that hit a fatal error");
        // Dropping joins librdkafka's threads: not on this (async) thread. Sends still
        // holding it drop their handles when they finish.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(true)
    }
}
