//! [`Sender`]: one event to Kafka, acknowledged (`acks=all`) within the deadline, behind
//! the [`Breaker`].
//!
//! The producer's `message.timeout.ms` is set to the request deadline, so a record the
//! broker did not take in time is also given up by the client: a `503` is not followed by
//! the same record landing minutes later when the broker returns (it can still have been
//! written if the broker wrote it but its acknowledgement was lost; a retry with the same
//! `Idempotency-Key` then carries the same event id, which consumers dedupe on).

use std::sync::Arc;
use std::time::Duration;

use herald_bus::publisher::Record;
use herald_bus::schema::KnownSchema;
use herald_bus::{PublishError, Publisher};

use crate::breaker::{Breaker, State};
use crate::problem::Problem;

/// Sends records for the gateway.
#[derive(Debug, Clone)]
pub struct Sender {
    publisher: Publisher,
    breaker: Arc<Breaker>,
    deadline: Duration,
    resetting: Arc<tokio::sync::Mutex<()>>,
}

impl Sender {
    /// A sender over `publisher`, waiting at most `deadline` for an acknowledgement.
    pub fn new(publisher: Publisher, breaker: Arc<Breaker>, deadline: Duration) -> Self {
        Sender { publisher, breaker, deadline, resetting: Arc::default() }
    }

    /// The publisher (to frame payloads, to flush at shutdown).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// How long a request may wait for the broker.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> State {
        self.breaker.state()
    }

    /// Frames `datum` with the publisher's codec.
    pub async fn frame(&self, topic: &str, schema: &KnownSchema, datum: &[u8]) -> Result<Vec<u8>, Problem> {
        self.publisher.frame(topic, schema, datum).await.map_err(|e| Problem::unavailable(format!("cannot frame the event: {e}"), Duration::from_secs(1)))
    }

    /// Sends `record` and waits for the broker's acknowledgement: `(partition, offset)`.
    /// Otherwise `503` (broker away, breaker open, deadline passed) or `413` (larger than
    /// the broker accepts). Cancel-safe in the sense that dropping the future does not
    /// unsend a record already queued.
    pub async fn send(&self, record: Record) -> Result<(i32, i64), Problem> {
        self.send_by(record, tokio::time::Instant::now() + self.deadline).await
    }

    /// [`Sender::send`] with the request's own deadline `until` (a request that wrote
    /// something before its event has less than the whole deadline left).
    pub async fn send_by(&self, record: Record, until: tokio::time::Instant) -> Result<(i32, i64), Problem> {
        let permit = match self.breaker.admit() {
            Ok(permit) => permit,
            Err(wait) => return Err(Problem::unavailable("the event store is unavailable (circuit open); nothing was written", wait)),
        };
        let result = tokio::time::timeout_at(until, self.publisher.send_record(record)).await;
        match result {
            Ok(Ok(position)) => {
                self.breaker.success(permit);
                Ok(position)
            }
            Ok(Err(PublishError::Oversize { size, limit })) => {
                // Refused before it reached the broker: says nothing of the broker, so
                // neither closes the breaker (were it a probe) nor counts as a failure.
                drop(permit);
                Err(Problem::too_large(format!("the event is {size} bytes; the broker takes at most {limit}")))
            }
            Ok(Err(e)) => {
                let wait = self.breaker.failure(permit);
                if e.is_fatal() {
                    self.reset();
                }
                tracing::warn!(error = %e, "publish failed");
                let maybe = if e.possibly_persisted() { " (it may have been written; retry with the same Idempotency-Key)" } else { "" };
                Err(Problem::unavailable(format!("the event store did not acknowledge the event{maybe}"), wait))
            }
            Err(_elapsed) => {
                let wait = self.breaker.failure(permit);
                tracing::warn!(deadline_ms = self.deadline.as_millis() as u64, "publish deadline passed");
                Err(Problem::unavailable(
                    format!("the event store did not acknowledge the event within {} ms (it may have been written; retry with the same Idempotency-Key)", self.deadline.as_millis()),
                    wait,
                ))
            }
        }
    }

    /// Replaces a producer that failed fatally, once, in the background.
    fn reset(&self) {
        let Ok(guard) = self.resetting.clone().try_lock_owned() else { return };
        let publisher = self.publisher.clone();
        tokio::spawn(async move {
            match publisher.reset(Duration::from_secs(5)).await {
                Ok(_) => tracing::info!("producer replaced after a fatal error"),
                Err(e) => tracing::error!(error = %e, "cannot replace the producer"),
            }
            drop(guard);
        });
    }
}
