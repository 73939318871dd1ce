//! W3C trace context (`traceparent`) for events.
//!
//! The consumer runtime makes each handled event's trace context current for its handler
//! (a task-local, scoped to the handler's future), and the publisher stamps events published
//! from inside a handler with a child of it. So a flow of events across services forms one
//! trace, whatever tracing backend reads the headers.

use std::fmt;
use std::str::FromStr;

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

/// A `traceparent` value that is not valid W3C trace context.
#[derive(Debug, thiserror::Error)]
#[error("invalid traceparent {0:?}")]
pub struct InvalidTraceparent(String);

impl FromStr for TraceContext {
    type Err = InvalidTraceparent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidTraceparent(s.to_owned());
        let mut parts = s.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(flags), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return Err(bad());
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| bad())?;
        let span_id = u64::from_str_radix(span, 16).map_err(|_| bad())?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| bad())?;
        if trace_id == 0 || span_id == 0 {
            return Err(bad());
        }
        Ok(TraceContext { trace_id, span_id, flags })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_invalid_traceparents() {
        for bad in ["", "00-abc-def-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"] {
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
