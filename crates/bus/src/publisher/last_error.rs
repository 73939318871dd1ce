//! The client's most recent error, to explain a delivery that later times out.

use std::sync::Mutex;
use std::time::Instant;

/// The client's most recent error (a failed SASL authentication, a TLS handshake, a broker
/// that cannot be reached) and when it happened. librdkafka reports such errors only to
/// the context and keeps retrying, so a record's delivery later fails with nothing but
/// "Message timed out"; the publisher attaches this to that failure.
#[derive(Debug, Default)]
pub(crate) struct LastError(Mutex<Option<(Instant, String)>>);

impl LastError {
    pub(crate) fn set(&self, message: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), message));
    }

    /// The last error if it happened after `since`.
    pub(crate) fn since(&self, since: Instant) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|(at, _)| *at >= since).map(|(_, m)| m.clone())
    }
}
