//! A route: decoding and handling for one subscribed topic, with its family's types erased.
//!
//! Types are checked when a handler is subscribed (`Topic<F>` with `Handler<F>`); inside
//! the runtime each topic's route is a `dyn Route` chosen by topic name, which is the
//! routing Kafka already does.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use futures::FutureExt;
use tracing::Instrument;

use super::decode::decode_record;
use super::record::OwnedRecord;
use crate::codec::Codec;
use crate::dead_letter::{Failure, Stage};
use crate::runtime::FailureClass;
use crate::trace::TraceContext;
use crate::{EventFamily, Handler};

/// What to do with a record whose type the topic's family does not include: its writer
/// schema is known but not a member, or the schema is unknown to this reader and the
/// record's `ce_type` names a type outside the family. (An unknown schema with no
/// `ce_type`, or one naming a member, is undecodable: dead-lettered at stage `decode`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownTypes {
    /// Send it to the dead-letter topic (default): nothing is dropped silently.
    #[default]
    DeadLetter,
    /// Skip it and count it in `herald_consumer_events_total{outcome="skipped"}`. Use when
    /// a topic legitimately carries types this consumer does not care about.
    Skip,
}

/// The result of one attempt at a record.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Handled.
    Handled,
    /// Deliberately skipped (unknown type with [`UnknownTypes::Skip`]).
    Skipped,
    /// Not handled: the retry and dead-letter layers decide what next.
    Failed(Failure, FailureClass),
}

/// Per-route settings from the consumer builder.
#[derive(Clone)]
pub(crate) struct RouteSettings {
    pub topic: String,
    pub handler_timeout: Duration,
    pub unknown_types: UnknownTypes,
    pub codec: Arc<dyn Codec>,
}

/// One topic's decoding and handler, with the family's type erased.
#[async_trait]
pub(crate) trait Route: Send + Sync + 'static {
    /// Decodes `msg` and calls the handler once (`attempt` counts from 1).
    async fn attempt(&self, msg: &OwnedRecord, attempt: u32) -> Attempt;
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

#[async_trait]
impl<F: EventFamily, H: Handler<F>> Route for TypedRoute<F, H> {
    async fn attempt(&self, msg: &OwnedRecord, attempt: u32) -> Attempt {
        let envelope = match decode_record::<F>(&*self.settings.codec, msg).await {
            Ok(envelope) => envelope,
            // The schema cannot be fetched now: wait, without giving up the record.
            Err(f) if f.stage == Stage::Unavailable => return Attempt::Failed(f, FailureClass::Wait),
            Err(f) if f.stage == Stage::UnknownType && self.settings.unknown_types == UnknownTypes::Skip => return Attempt::Skipped,
            Err(f) => return Attempt::Failed(f, FailureClass::Permanent),
        };
        let trace = envelope.meta.trace.map(|t| t.child()).unwrap_or_else(TraceContext::new_root);
        // The span reported once the handler is done (when an exporter listens and the
        // event came with a trace): its parent is the span that wrote the event.
        let report = match envelope.meta.trace {
            Some(cause) if crate::trace::spans_wanted() => Some((cause.span_id, envelope.meta.event_type.clone(), envelope.meta.ce_id(), std::time::SystemTime::now())),
            _ => None,
        };
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
        // One clock reading serves the timeout's deadline and the duration metric.
        let started = Instant::now();
        let timeout = self.settings.handler_timeout;
        let mut call = std::pin::pin!(AssertUnwindSafe(trace.scope(self.handler.handle(envelope))).catch_unwind());
        let result = async {
            // A handler that finishes on its first poll needs no timer (tokio's timeout
            // too polls the handler first, so the outcome is the same); the others run
            // under the deadline counted from `started`.
            if let std::task::Poll::Ready(done) = futures::poll!(call.as_mut()) {
                return Ok(done);
            }
            match started.checked_add(timeout) {
                Some(deadline) => tokio::time::timeout_at(deadline, call).await,
                None => tokio::time::timeout(timeout, call).await,
            }
        }
        .instrument(span)
        .await;
        self.handle_seconds.record(started.elapsed().as_secs_f64());
        if let Some((parent, event_type, event_id, began)) = report {
            let name = format!("process {}", msg.topic());
            let failed = !matches!(result, Ok(Ok(Ok(()))));
            crate::trace::SpanRecord::new(&name, crate::trace::SpanKind::Consumer, trace, Some(parent), began).topic(msg.topic()).event(&event_type, &event_id).failed(failed).record();
        }
        let (reason, class) = match result {
            Ok(Ok(Ok(()))) => return Attempt::Handled,
            Ok(Ok(Err(e))) if e.is_permanent() => (e.to_string(), FailureClass::Permanent),
            Ok(Ok(Err(e))) if e.is_unavailable() => (e.to_string(), FailureClass::Wait),
            Ok(Ok(Err(e))) => (e.to_string(), FailureClass::Retry),
            Ok(Err(panic)) => (format!("handler panicked: {}", crate::panics::describe(&*panic)), FailureClass::Retry),
            Err(_) => (format!("handler timed out after {:?}", self.settings.handler_timeout), FailureClass::Retry),
        };
        Attempt::Failed(Failure { stage: Stage::Handler, reason, attempts: attempt }, class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SingleObject;
    use crate::{EventFamily, HandlerError};

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Pinged {
        id: String,
    }

    impl crate::Event for Pinged {
        const TYPE: &'static str = "test.Pinged";
        const SCHEMA: &'static str = r#"{"type":"record","name":"Pinged","namespace":"test","fields":[{"name":"id","type":"string"}]}"#;
        fn aggregate_id(&self) -> &str {
            &self.id
        }
    }

    crate::family! {
        #[derive(Debug)]
        enum Pings { Pinged(Pinged) }
    }

    fn route<H: crate::Handler<Pings>>(handler: H) -> TypedRoute<Pings, H> {
        let codec = Arc::new(SingleObject::new(Pings::schemas().clone()));
        TypedRoute::new(handler, RouteSettings { topic: "pings".into(), handler_timeout: Duration::from_secs(5), unknown_types: UnknownTypes::DeadLetter, codec })
    }

    fn record() -> OwnedRecord {
        let known = Pings::schemas().latest(<Pinged as crate::Event>::TYPE).expect("member");
        let mut payload = crate::codec::SINGLE_OBJECT_MAGIC.to_vec();
        payload.extend_from_slice(&known.fingerprint.0);
        crate::publisher::encode_datum(known, &Pinged { id: "p-1".into() }, &mut payload).expect("encodes");
        OwnedRecord::for_test(&Arc::from("pings"), 0, 7, &payload)
    }

    #[tokio::test]
    async fn a_handler_error_class_follows_its_kind() {
        let unavailable = route(|_: crate::Envelope<Pings>| async { Err::<(), _>(HandlerError::unavailable("database restarting")) });
        assert!(matches!(unavailable.attempt(&record(), 1).await, Attempt::Failed(_, FailureClass::Wait)), "an unavailable dependency waits");
        let transient = route(|_: crate::Envelope<Pings>| async { Err::<(), _>(HandlerError::msg("timeout")) });
        assert!(matches!(transient.attempt(&record(), 1).await, Attempt::Failed(_, FailureClass::Retry)));
        let permanent = route(|_: crate::Envelope<Pings>| async { Err::<(), _>(HandlerError::permanent_msg("bad")) });
        assert!(matches!(permanent.attempt(&record(), 1).await, Attempt::Failed(_, FailureClass::Permanent)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_done_at_once_is_handled_and_a_slow_one_times_out() {
        let quick = route(|_: crate::Envelope<Pings>| async { Ok::<(), HandlerError>(()) });
        assert!(matches!(quick.attempt(&record(), 1).await, Attempt::Handled));

        // Finishes after a while, within the timeout: handled.
        let patient = route(|_: crate::Envelope<Pings>| async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok::<(), HandlerError>(())
        });
        assert!(matches!(patient.attempt(&record(), 1).await, Attempt::Handled));

        // Takes longer than the 5 s timeout: a transient failure that says so.
        let slow = route(|_: crate::Envelope<Pings>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), HandlerError>(())
        });
        let started = tokio::time::Instant::now();
        match slow.attempt(&record(), 2).await {
            Attempt::Failed(failure, FailureClass::Retry) => {
                assert!(failure.reason.contains("timed out after 5s"), "{}", failure.reason);
                assert_eq!(failure.attempts, 2);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(5), "the deadline counts from the start of the call");
    }
}
