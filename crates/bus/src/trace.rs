//! W3C trace context (`traceparent`) for events.
//!
//! The consumer runtime makes each handled event's trace context current for its handler
//! (a task-local, scoped to the handler's future), and the publisher stamps events published
//! from inside a handler with a child of it. So a flow of events across services forms one
//! trace, whatever tracing backend reads the headers.
//!
//! # Spans
//! The headers carry the trace; [`SpanRecord`] reports the work Herald did under it (a
//! gateway request, a handled event, a reaction's emitted event) as a finished span with
//! the very ids the headers carry, so a trace backend can draw the flow. Herald's
//! libraries only report spans, as `tracing` events on the target [`SPAN_TARGET`] (free
//! when nothing listens); a binary exports them with herald-ops' OTLP layer
//! (`herald_ops::telemetry`), configured by the standard `OTEL_EXPORTER_OTLP_*` variables.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// A W3C `traceparent`: version 00, trace id, parent (span) id, flags.
///
/// ```
/// use herald_bus::trace::TraceContext;
/// let t: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
/// assert_eq!(t.child().trace_id, t.trace_id);
/// assert_eq!(t.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id.
    pub trace_id: u128,
    /// 8-byte span id of the parent.
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_root() -> Self {
        TraceContext { trace_id: nonzero_u128(), span_id: nonzero_u64(), flags: 1 }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext { span_id: nonzero_u64(), ..*self }
    }

    /// The trace context of the event being handled on this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|t| *t).ok()
    }

    /// Runs `fut` with `self` as the current trace context.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let v: u128 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

/// The `tracing` target of the events that report finished spans ([`SpanRecord::record`]).
pub const SPAN_TARGET: &str = "herald::span";

/// Whether anything listens for span reports (an exporter is installed): callers skip
/// preparing a [`SpanRecord`] when not.
pub fn spans_wanted() -> bool {
    tracing::enabled!(target: SPAN_TARGET, tracing::Level::TRACE)
}

/// What a span stands for, as OpenTelemetry's span kinds say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Handling a request (the gateway).
    Server,
    /// Handling an event read from a topic.
    Consumer,
    /// Creating an event for a topic.
    Producer,
}

impl SpanKind {
    /// `server`, `consumer` or `producer`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "server",
            SpanKind::Consumer => "consumer",
            SpanKind::Producer => "producer",
        }
    }
}

/// A finished span of work done under a trace: its own id is `context.span_id` (the id
/// the event headers carry), its parent the span it continued.
///
/// ```
/// use std::time::SystemTime;
/// use herald_bus::trace::{SpanKind, SpanRecord, TraceContext};
/// let cause = TraceContext::new_root();
/// let mine = cause.child();
/// let span = SpanRecord::new("process shop.orders", SpanKind::Consumer, mine, Some(cause.span_id), SystemTime::now())
///     .topic("shop.orders")
///     .event("shop.orders.OrderPlaced", "0190a6b2-0000-7000-8000-000000000000");
/// span.record(); // a `tracing` event on SPAN_TARGET: exported if an OTLP layer listens
/// ```
#[derive(Debug, Clone)]
pub struct SpanRecord<'a> {
    /// Its name (`{operation} {destination}`, OpenTelemetry's messaging convention).
    pub name: &'a str,
    /// Its kind.
    pub kind: SpanKind,
    /// Its trace and its own span id.
    pub context: TraceContext,
    /// The span it continued, if any (`None`: the trace's root).
    pub parent: Option<u64>,
    /// When the work began.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// The topic read or written (`messaging.destination.name`).
    pub topic: Option<&'a str>,
    /// The event's type (`ce_type`).
    pub event_type: Option<&'a str>,
    /// The event's id (`ce_id`).
    pub event_id: Option<&'a str>,
    /// Who did the work inside the process: a participant, a route, a handler.
    pub actor: Option<&'a str>,
    /// Whether the work failed.
    pub error: bool,
}

impl<'a> SpanRecord<'a> {
    /// A span that began at `start` and ends now.
    pub fn new(name: &'a str, kind: SpanKind, context: TraceContext, parent: Option<u64>, start: SystemTime) -> Self {
        SpanRecord { name, kind, context, parent, start, end: SystemTime::now(), topic: None, event_type: None, event_id: None, actor: None, error: false }
    }

    /// With the topic it read or wrote.
    pub fn topic(mut self, topic: &'a str) -> Self {
        self.topic = Some(topic);
        self
    }

    /// With the event's type and id.
    pub fn event(mut self, event_type: &'a str, event_id: &'a str) -> Self {
        self.event_type = Some(event_type);
        self.event_id = Some(event_id);
        self
    }

    /// With who did the work (a participant, a route).
    pub fn actor(mut self, actor: &'a str) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Marked as failed when `failed`.
    pub fn failed(mut self, failed: bool) -> Self {
        self.error = failed;
        self
    }

    /// Reports the span: a `tracing` event at TRACE level on [`SPAN_TARGET`], when its
    /// trace is sampled (flag bit 0).
    pub fn record(&self) {
        if self.context.flags & 1 == 0 {
            return;
        }
        let nanos = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        tracing::trace!(
            target: SPAN_TARGET,
            trace_id = self.context.trace_id,
            otel.name = self.name,
            otel.kind = self.kind.as_str(),
            span_id = self.context.span_id,
            parent_span_id = self.parent.unwrap_or(0),
            start_unix_nanos = nanos(self.start),
            end_unix_nanos = nanos(self.end),
            error = self.error,
            messaging.destination.name = self.topic,
            ce.r#type = self.event_type,
            ce.id = self.event_id,
            herald.actor = self.actor,
        );
    }
}

/// A `traceparent` value that is not valid W3C trace context.
#[derive(Debug, thiserror::Error)]
#[error("invalid traceparent {0:?}")]
pub struct InvalidTraceparent(String);

/// Reads a `traceparent` as W3C Trace Context (level 2, section 3.2) asks: lower-case hex
/// fields of fixed length at fixed places, version `ff` and all-zero ids invalid, nothing
/// after a version `00` value but blanks, and for a higher version whatever follows a dash
/// after the flags (a later version's fields), ignored. Blanks around it are allowed, as in
/// an HTTP header; a value over 512 bytes is refused (OpenTelemetry's bound).
///
/// ```
/// use herald_bus::trace::TraceContext;
/// let t: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
/// assert_eq!((t.trace_id, t.span_id, t.flags), (0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1));
/// assert!("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later".parse::<TraceContext>().is_ok());
/// assert!("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".parse::<TraceContext>().is_err());
/// ```
impl FromStr for TraceContext {
    type Err = InvalidTraceparent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidTraceparent(s.to_owned());
        const BLANK: [char; 2] = [' ', '\t'];
        if s.len() > 512 {
            return Err(bad());
        }
        let value = s.trim_start_matches(BLANK);
        let (Some(version), Some(trace), Some(span), Some(flags)) = (value.get(0..2), value.get(3..35), value.get(36..52), value.get(53..55)) else {
            return Err(bad());
        };
        let dashes = value.as_bytes();
        let rest = &value[55..];
        let rest_ok = if version == "00" { rest.trim_start_matches(BLANK).is_empty() } else { rest.starts_with('-') || rest.trim_start_matches(BLANK).is_empty() };
        let hex = |field: &str| field.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if (dashes[2], dashes[35], dashes[52]) != (b'-', b'-', b'-') || !rest_ok || version == "ff" || ![version, trace, span, flags].into_iter().all(hex) {
            return Err(bad());
        }
        let (trace_id, span_id, flags) = match (u128::from_str_radix(trace, 16), u64::from_str_radix(span, 16), u8::from_str_radix(flags, 16)) {
            (Ok(trace_id), Ok(span_id), Ok(flags)) if trace_id != 0 && span_id != 0 => (trace_id, span_id, flags),
            _ => return Err(bad()),
        };
        Ok(TraceContext { trace_id, span_id, flags })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_invalid_traceparents() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // from_str_radix alone takes a sign and upper case; the spec does not.
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(bad.parse::<TraceContext>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn scope_sets_the_current_context() {
        assert!(TraceContext::current().is_none());
        let t = TraceContext::new_root();
        assert_eq!(t.scope(async { TraceContext::current() }).await, Some(t));
    }
}
