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
use crate::last_error::LastError;
use super::producer::{Producer, Report};
use super::PublishError;

/// Resolves to `(partition, offset)` when the broker acknowledged the record
/// [`Publisher::enqueue`](super::Publisher::enqueue) queued, or to the error (with the
/// record handed back, except [`PublishError::Canceled`]: the producer was dropped without
/// reporting).
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

    /// The result if the delivery report arrived, `None` while it has not. Never waits,
    /// registers no waker, and uses none of the task's cooperative budget (a poll does,
    /// and once the budget is spent answers "not yet" even for a report that is there).
    pub(crate) fn try_take(&mut self) -> Option<Result<(i32, i64), PublishError>> {
        match self.rx.try_recv() {
            Ok(report) => Some(self.resolve(Some(report))),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(self.resolve(None)),
        }
    }

    /// The result for a report (`None`: the producer was dropped without reporting).
    fn resolve(&mut self, report: Option<Report>) -> Result<(i32, i64), PublishError> {
        let topic = std::mem::take(&mut self.topic);
        match report {
            Some(Ok(delivered)) => Ok(delivered),
            Some(Err((source, record))) => {
                let record = Box::new(record);
                let producer = self.producer.upgrade();
                let reason = match &producer {
                    Some(producer) => self.fatal.check(producer),
                    None => self.fatal.get(),
                };
                if let Some(reason) = reason {
                    // Purged from the queue: never sent. Anything else was in flight.
                    let possibly_persisted = source.rdkafka_error_code() != Some(RDKafkaErrorCode::PurgeQueue);
                    return Err(PublishError::Fatal { topic, reason: reason.to_owned(), possibly_persisted, record });
                }
                // Timed out: maybe for want of any broker, which librdkafka can leave a
                // client with for good (see `crate::rebootstrap`). Giving the bootstrap
                // servers back costs a connection until the next metadata response.
                if source.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut)
                    && let Some(producer) = &producer
                {
                    crate::rebootstrap::rebootstrap(producer.client());
                }
                // An error from up to a minute before the record was queued still explains
                // it: librdkafka keeps failing the same way while it retries.
                let client_error = self.last_error.since(self.started.checked_sub(Duration::from_secs(60)).unwrap_or(self.started));
                Err(PublishError::Delivery { topic, source: Box::new(source), client_error, record })
            }
            // The producer was destroyed without reporting (dropped without a flush).
            None => Err(PublishError::Canceled { topic }),
        }
    }
}

impl Future for Delivery {
    type Output = Result<(i32, i64), PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let report = ready!(Pin::new(&mut self.rx).poll(cx));
        Poll::Ready(self.resolve(report.ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::producer::DeliveryContext;
    use rdkafka::config::FromClientConfigAndContext;

    /// A producer client (no broker needed to create one) for the deliveries' fatal state.
    fn producer() -> Arc<Producer> {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        let context = DeliveryContext { space: Default::default(), last_error: Default::default(), fatal: Default::default() };
        Arc::new(Producer::from_config_and_context(&config, context).expect("a producer client"))
    }

    /// `publish_all` takes thousands of ready deliveries within one poll of its task; a
    /// poll of each would stop answering after tokio's cooperative budget (128).
    #[tokio::test]
    async fn thousands_of_ready_deliveries_are_taken_in_one_go() {
        let producer = producer();
        let mut deliveries = Vec::new();
        for n in 0..1000 {
            let (tx, rx) = oneshot::channel();
            tx.send(Ok((0, n))).expect("receiver alive");
            deliveries.push(Delivery::new(rx, "t".into(), Instant::now(), &producer, Arc::default()));
        }
        let taken: Vec<i64> = deliveries.iter_mut().filter_map(|d| d.try_take()).map(|r| r.expect("delivered").1).collect();
        assert_eq!(taken, (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_delivery_not_reported_yet_is_not_taken_and_a_dropped_producer_is_canceled() {
        let producer = producer();
        let (tx, rx) = oneshot::channel();
        let mut waiting = Delivery::new(rx, "t".into(), Instant::now(), &producer, Arc::default());
        assert!(waiting.try_take().is_none());
        tx.send(Ok((2, 7))).expect("receiver alive");
        assert_eq!(waiting.try_take().map(|r| r.ok()), Some(Some((2, 7))));
        let (tx, rx) = oneshot::channel::<Report>();
        let mut dropped = Delivery::new(rx, "t".into(), Instant::now(), &producer, Arc::default());
        drop(tx);
        assert!(matches!(dropped.try_take(), Some(Err(PublishError::Canceled { .. }))));
        // Awaited, it resolves the same way.
        let (tx, rx) = oneshot::channel();
        let awaited = Delivery::new(rx, "t".into(), Instant::now(), &producer, Arc::default());
        tx.send(Ok((1, 3))).expect("receiver alive");
        assert_eq!(awaited.await.ok(), Some((1, 3)));
    }

    #[test]
    fn a_delivery_is_send_and_unpin() {
        fn assert<T: Send + Unpin>() {}
        assert::<Delivery>();
    }
}
