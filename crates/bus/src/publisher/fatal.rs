//! [`Fatal`]: whether one producer hit a fatal error, seen by every send on it.

use std::sync::OnceLock;

use rdkafka::producer::Producer as _;

use super::Producer;

/// Set once a send finds that the producer it belongs to hit a fatal error; never
/// cleared (a fatal producer stays fatal: [`Publisher::reset`](super::Publisher::reset)
/// replaces it).
///
/// librdkafka sets its fatal error before it purges the queued records, so every purged
/// record's delivery report finds the client in the fatal state.
#[derive(Debug, Default)]
pub(crate) struct Fatal(OnceLock<String>);

impl Fatal {
    /// The fatal error, if a send saw one.
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    /// The fatal error of `producer`, asking the client when none was seen yet.
    pub(crate) fn check(&self, producer: &Producer) -> Option<&str> {
        if self.get().is_none()
            && let Some((code, reason)) = producer.client().fatal_error()
            && self.0.set(format!("{code:?}: {reason}")).is_ok()
        {
            tracing::error!(?code, reason, "producer hit a fatal error: every send fails until Publisher::reset");
            metrics::counter!("herald_producer_fatal_total").increment(1);
        }
        self.get()
    }
}
