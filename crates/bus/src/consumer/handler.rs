//! Handlers: what users write to react to events.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;

use crate::Envelope;

/// Reacts to the events of family `F`.
///
/// A handler must be idempotent in effect: Herald delivers at least once (an event may be
/// handled again after a crash or a rebalance, never skipped). Return an error to say the
/// event was not handled: transient errors are retried with backoff, permanent ones (and
/// transient ones that exhausted their retries) go to the dead-letter topic.
///
/// Limits: each call runs under the consumer's `handler_timeout` (default 60 s); a call
/// that takes longer counts as a transient failure. Calls for one partition are serial,
/// so events with the same key are handled in order.
///
/// Plain async closures are handlers; so is any type that implements the trait:
///
/// ```
/// use herald_bus::{Envelope, Handler, HandlerError};
/// # herald_bus::family! { #[derive(Debug)] pub enum Demo { A(A) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct A { id: String }
/// # impl herald_bus::Event for A { const TYPE: &'static str = "A"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
///
/// struct Counter(std::sync::atomic::AtomicU64);
///
/// #[async_trait::async_trait]
/// impl Handler<Demo> for Counter {
///     async fn handle(&self, event: Envelope<Demo>) -> Result<(), HandlerError> {
///         match event.event {
///             Demo::A(_) => self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
///         };
///         Ok(())
///     }
/// }
///
/// let closure = |event: Envelope<Demo>| async move {
///     if event.meta.subject.is_empty() {
///         return Err(HandlerError::permanent_msg("event without subject"));
///     }
///     Ok(())
/// };
/// # fn is_handler<H: Handler<Demo>>(_: &H) {}
/// # is_handler(&closure);
/// # is_handler(&Counter(Default::default()));
/// ```
#[async_trait]
pub trait Handler<F>: Send + Sync + 'static {
    /// Handles one event.
    async fn handle(&self, event: Envelope<F>) -> Result<(), HandlerError>;
}

#[async_trait]
impl<F, H, Fut> Handler<F> for H
where
    F: Send + 'static,
    H: Fn(Envelope<F>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, event: Envelope<F>) -> Result<(), HandlerError> {
        (self)(event).await
    }
}

/// A handler's failure: transient (retry), permanent (dead-letter at once), or
/// unavailable (wait and retry for as long as it takes).
///
/// Any `std::error::Error` converts with `?` into a transient failure.
pub struct HandlerError {
    permanent: bool,
    unavailable: bool,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl HandlerError {
    /// A failure that may go away if retried (a database timeout, a network error).
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        HandlerError { permanent: false, unavailable: false, source: source.into() }
    }

    /// A failure that retrying cannot fix (the event breaks a business rule).
    pub fn permanent(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        HandlerError { permanent: true, unavailable: false, source: source.into() }
    }

    /// Something the handler needs is unavailable for now (its database is down or
    /// restarting): the record is retried with backoff for as long as it takes, without
    /// using the retry policy's attempts, so an outage never sends it to the dead-letter
    /// topic. The partition waits meanwhile (later records of it are not handled).
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        HandlerError { permanent: false, unavailable: true, source: source.into() }
    }

    /// A transient failure with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::transient(message.into())
    }

    /// A permanent failure with a message.
    pub fn permanent_msg(message: impl Into<String>) -> Self {
        Self::permanent(message.into())
    }

    /// True when retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// True when the handler said something it needs is unavailable
    /// ([`HandlerError::unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::transient(e)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)?;
        let mut cause = self.source.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError").field("permanent", &self.permanent).field("unavailable", &self.unavailable).field("source", &self.source).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        let unavailable = HandlerError::unavailable("database restarting");
        assert!(unavailable.is_unavailable() && !unavailable.is_permanent());
        let transient = HandlerError::msg("timeout");
        assert!(!transient.is_unavailable() && !transient.is_permanent());
        let permanent = HandlerError::permanent_msg("bad order");
        assert!(!permanent.is_unavailable() && permanent.is_permanent());
        assert_eq!(unavailable.to_string(), "database restarting");
    }
}
