//! A route: decoding and handling for one subscribed topic, with its family's types erased.
//!
//! Types are checked when a handler is subscribed (`Topic<F>` with `Handler<F>`); inside
//! the runtime each topic's route is a `dyn Route` chosen by topic name, which is the
//! routing Kafka already does.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::message::{Headers, Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::record::OwnedRecord;
use crate::codec::{Codec, DecodeError};
use crate::dead_letter::{Failure, Stage};
use crate::envelope::{Envelope, Metadata, Position};
use crate::trace::TraceContext;
use crate::{EventFamily, Handler, RetryPolicy};

/// What to do with a record whose type the topic's family does not include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownTypes {
    /// Send it to the dead-letter topic (default): nothing is dropped silently.
    #[default]
    DeadLetter,
    /// Skip it and count it in `herald_consumer_events_total{outcome="skipped"}`. Use when
    /// a topic legitimately carries types this consumer does not care about.
    Skip,
}

/// The result of processing one record.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Handled; store the offset.
    Handled,
    /// Deliberately skipped (unknown type with [`UnknownTypes::Skip`]); store the offset.
    Skipped,
    /// Not handled; dead-letter it, then store the offset.
    Failed(Failure),
    /// Stopped by shutdown or revocation before finishing; do not store the offset.
    Interrupted,
}

/// Per-route settings from the consumer builder.
#[derive(Clone)]
pub(crate) struct RouteSettings {
    pub topic: String,
    pub retry: RetryPolicy,
    pub handler_timeout: Duration,
    pub unknown_types: UnknownTypes,
    pub codec: Arc<dyn Codec>,
}

#[async_trait]
pub(crate) trait Route: Send + Sync + 'static {
    async fn process(&self, msg: &OwnedRecord, cancel: &CancellationToken) -> Outcome;
}

pub(crate) struct TypedRoute<F, H> {
    handler: H,
    settings: RouteSettings,
    handle_seconds: metrics::Histogram,
    _family: PhantomData<fn() -> F>,
}

impl<F: EventFamily, H: Handler<F>> TypedRoute<F, H> {
    pub(crate) fn new(handler: H, settings: RouteSettings) -> Self {
        let handle_seconds = metrics::histogram!("herald_consumer_handle_seconds", "topic" => settings.topic.clone());
        TypedRoute { handler, settings, handle_seconds, _family: PhantomData }
    }
}

/// Decodes a consumed record into an envelope of family `F`: the codec finds the writer
/// schema, the family decodes (resolving to its own schema versions), the headers give
/// the metadata. A failure says which stage failed and why, ready for the dead-letter
/// topic. Runtimes other than [`Consumer`](crate::Consumer) (projectors, sagas) use it
/// too.
pub async fn decode<F: EventFamily>(codec: &dyn Codec, msg: &OwnedMessage) -> Result<Envelope<F>, Failure> {
    let headers = msg.headers().into_iter().flat_map(|h| h.iter()).map(|h| (h.key.as_bytes(), h.value));
    let position = || Position { topic: msg.topic().to_owned(), partition: msg.partition(), offset: msg.offset() };
    decode_parts(codec, msg.payload(), msg.key(), headers, position).await
}

/// [`decode`] of an [`OwnedRecord`].
pub async fn decode_record<F: EventFamily>(codec: &dyn Codec, record: &OwnedRecord) -> Result<Envelope<F>, Failure> {
    let position = || Position { topic: record.topic().to_owned(), partition: record.partition(), offset: record.offset() };
    decode_parts(codec, record.payload(), record.key(), record.headers(), position).await
}

async fn decode_parts<'a, F: EventFamily>(
    codec: &dyn Codec,
    payload: Option<&[u8]>,
    key: Option<&[u8]>,
    headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    position: impl FnOnce() -> Position,
) -> Result<Envelope<F>, Failure> {
    let decode_failure = |e: &dyn std::fmt::Display| Failure { stage: Stage::Decode, reason: e.to_string(), attempts: 0 };
    let payload = payload.ok_or_else(|| decode_failure(&DecodeError::Empty))?;
    let (writer, datum) = codec.read_header(payload).await.map_err(|e| Failure {
        stage: if e.is_transient() { Stage::Unavailable } else { Stage::Decode },
        reason: e.to_string(),
        attempts: 0,
    })?;
    let event = match F::decode(&writer.name, &writer, datum) {
        Ok(Some(event)) => event,
        Ok(None) => {
            return Err(Failure {
                stage: Stage::UnknownType,
                reason: format!("event type {} is not handled on this topic (expected one of {:?})", writer.name, F::TYPES),
                attempts: 0,
            })
        }
        Err(e) => return Err(decode_failure(&e)),
    };
    let meta = Metadata::from_header_pairs(headers, key, &writer.name).map_err(|e| decode_failure(&e))?;
    Ok(Envelope { event, meta, position: position() })
}

#[async_trait]
impl<F: EventFamily, H: Handler<F>> Route for TypedRoute<F, H> {
    async fn process(&self, msg: &OwnedRecord, cancel: &CancellationToken) -> Outcome {
        let policy = self.settings.retry;
        let max_attempts = policy.max_attempts.max(1);
        let mut last_error = String::new();
        let mut waits = 0u32;
        for attempt in 1..=max_attempts {
            let envelope = loop {
                match decode_record::<F>(&*self.settings.codec, msg).await {
                    Ok(envelope) => break envelope,
                    Err(f) if f.stage == Stage::Unavailable => {
                        // The schema cannot be fetched now: wait, without giving up the record.
                        waits += 1;
                        tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %f.reason, waits, "writer schema unavailable; waiting");
                        tokio::select! {
                            _ = tokio::time::sleep(policy.backoff(waits.min(16))) => {}
                            _ = cancel.cancelled() => return Outcome::Interrupted,
                        }
                    }
                    Err(f) if f.stage == Stage::UnknownType && self.settings.unknown_types == UnknownTypes::Skip => return Outcome::Skipped,
                    Err(f) => return Outcome::Failed(f),
                }
            };
            let trace = envelope.meta.trace.map(|t| t.child()).unwrap_or_else(TraceContext::new_root);
            let span = tracing::info_span!(
                "process",
                otel.name = %format_args!("process {}", msg.topic()),
                messaging.destination.name = msg.topic(),
                messaging.kafka.partition = msg.partition(),
                messaging.kafka.offset = msg.offset(),
                ce.id = %envelope.meta.id,
                ce.r#type = %envelope.meta.event_type,
                traceparent = %trace,
                attempt,
            );
            let started = Instant::now();
            let call = AssertUnwindSafe(trace.scope(self.handler.handle(envelope))).catch_unwind();
            let result = tokio::time::timeout(self.settings.handler_timeout, call).instrument(span).await;
            self.handle_seconds.record(started.elapsed().as_secs_f64());
            match result {
                Ok(Ok(Ok(()))) => return Outcome::Handled,
                Ok(Ok(Err(e))) if e.is_permanent() => {
                    return Outcome::Failed(Failure { stage: Stage::Handler, reason: e.to_string(), attempts: attempt })
                }
                Ok(Ok(Err(e))) => last_error = e.to_string(),
                Ok(Err(panic)) => last_error = format!("handler panicked: {}", panic_message(&panic)),
                Err(_) => last_error = format!("handler timed out after {:?}", self.settings.handler_timeout),
            }
            tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), attempt, error = %last_error, "handler failed");
            if attempt < max_attempts {
                tokio::select! {
                    _ = tokio::time::sleep(policy.backoff(attempt)) => {}
                    _ = cancel.cancelled() => return Outcome::Interrupted,
                }
            }
        }
        Outcome::Failed(Failure { stage: Stage::Handler, reason: last_error, attempts: max_attempts })
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
