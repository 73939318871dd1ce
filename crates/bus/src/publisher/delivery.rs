//! [`Delivery`]: the acknowledgement of one queued record, as a future.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use rdkafka::producer::Producer as _;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;

use super::fatal::Fatal;
use super::last_error::LastError;
use super::producer::{Producer, Report};
use super::PublishError;

/// Resolves to `(partition, offset)` when the broker acknowledged the record
/// [`Publisher::enqueue`](super::Publisher::enqueue) queued, or to the error with the
/// record handed back.
///
/// The record's in-flight place is freed (and its metrics recorded) by librdkafka's
/// delivery callback, whether or not this future is awaited yet; so a caller may queue
/// many records and collect their deliveries later. `Unpin`, so it can be kept in a
/// collection and polled in place.
///
/// ```no_run
/// # async fn run(publisher: herald_bus::Publisher, records: Vec<herald_bus::publisher::Record>) -> Result<(), herald_bus::PublishError> {
/// // Queue in order, then collect: a slot frees up when the broker answers, not when
/// // the delivery is awaited.
/// let mut deliveries = Vec::new();
/// for record in records {
///     deliveries.push(publisher.enqueue(record).await?);
/// }
/// for delivery in deliveries {
///     let (partition, offset) = delivery.await?;
///     println!("written at {partition}/{offset}");
/// }
/// # Ok(()) }
/// ```
#[must_use = "a delivery says whether the record was written"]
#[derive(Debug)]
pub struct Delivery {
    rx: oneshot::Receiver<Report>,
    /// Taken when the delivery resolves (it is in its error).
    topic: String,
    started: Instant,
    /// Weak: a delivery must not keep a replaced producer alive (dropping one joins its
    /// threads). A producer is replaced only after its fatal error was recorded.
    producer: Weak<Producer>,
    fatal: Arc<Fatal>,
    last_error: Arc<LastError>,
}

impl Delivery {
    pub(crate) fn new(rx: oneshot::Receiver<Report>, topic: String, started: Instant, producer: &Arc<Producer>, last_error: Arc<LastError>) -> Self {
        let fatal = producer.context().fatal.clone();
        Delivery { rx, topic, started, producer: Arc::downgrade(producer), fatal, last_error }
    }

    fn resolve(&mut self, report: Result<Report, oneshot::error::RecvError>) -> Result<(i32, i64), PublishError> {
        let topic = std::mem::take(&mut self.topic);
        match report {
            Ok(Ok(delivered)) => Ok(delivered),
            Ok(Err((source, record))) => {
                let record = Box::new(record);
                let reason = match self.producer.upgrade() {
                    Some(producer) => self.fatal.check(&producer),
                    None => self.fatal.get(),
                };
                if let Some(reason) = reason {
                    // Purged from the queue: never sent. Anything else was in flight.
                    let possibly_persisted = source.rdkafka_error_code() != Some(RDKafkaErrorCode::PurgeQueue);
                    return Err(PublishError::Fatal { topic, reason: reason.to_owned(), possibly_persisted, record });
                }
                // An error from up to a minute before the record was queued still explains
                // it: librdkafka keeps failing the same way while it retries.
                let client_error = self.last_error.since(self.started.checked_sub(Duration::from_secs(60)).unwrap_or(self.started));
                Err(PublishError::Delivery { topic, source: Box::new(source), client_error, record })
            }
            // The producer was destroyed without reporting (dropped without a flush).
            Err(_) => Err(PublishError::Canceled { topic }),
        }
    }
}

impl Future for Delivery {
    type Output = Result<(i32, i64), PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let report = ready!(Pin::new(&mut self.rx).poll(cx));
        Poll::Ready(self.resolve(report))
    }
}
