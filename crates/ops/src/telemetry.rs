//! Logs and traces for a Herald process: [`init`] installs the log formatter (stderr,
//! filtered by `RUST_LOG`) and, when the standard OpenTelemetry variables name a
//! collector, an exporter of Herald's spans over OTLP.
//!
//! Herald's libraries report each piece of work done under a trace (a gateway request, a
//! handled event, an event a reaction emitted) as a finished span with the ids the
//! events' `traceparent` headers carry ([`herald_bus::trace::SpanRecord`]). [`init`] turns
//! those into OpenTelemetry spans and hands them to the OpenTelemetry SDK's batch
//! processor and OTLP/HTTP exporter, so one order is one trace across the gateway and
//! every service it reached.
//!
//! Configuration is OpenTelemetry's own (the variables every OTLP exporter reads):
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (for example `http://127.0.0.1:4318`; spans go to
//!   `/v1/traces` under it) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL):
//!   without either, no span is exported and nothing is started;
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` / `..._TRACES_PROTOCOL`: `http/protobuf` (default)
//!   or `http/json`; `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT` as the spec says;
//! - `OTEL_SERVICE_NAME` (default: the name the binary gives), `OTEL_RESOURCE_ATTRIBUTES`;
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn the export off.
//!
//! ```no_run
//! # fn main() -> Result<(), herald_ops::telemetry::TelemetryError> {
//! // In a binary's main, before anything logs; keep the guard until the process ends:
//! // dropping it flushes the spans not exported yet.
//! let _telemetry = herald_ops::telemetry::init("orders", "info")?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_bus::trace::SPAN_TARGET;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Why logs or traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a bad endpoint, protocol or header).
    #[error("OTLP span exporter: {0}")]
    Exporter(String),
    /// A global `tracing` subscriber was installed already.
    #[error("a tracing subscriber is installed already: {0}")]
    Installed(String),
}

/// Keeps the span export running; dropping it flushes what is not exported yet (for at
/// most the exporter's timeout) and stops it.
#[must_use = "dropping the guard stops the span export"]
pub struct Telemetry {
    spans: Option<std::sync::Arc<BatchSpanProcessor>>,
}

impl Telemetry {
    /// Whether spans are exported (an OTLP endpoint is configured).
    pub fn exporting(&self) -> bool {
        self.spans.is_some()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("exporting", &self.exporting()).finish()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(spans) = self.spans.take()
            && let Err(e) = spans.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("OTLP span export did not flush: {e}");
        }
    }
}

/// Installs the process's `tracing` subscriber: logs to stderr (`RUST_LOG`, else
/// `default_filter`; colours only on a terminal) and, when an OTLP endpoint is configured
/// (see the [module docs](self)), the span exporter, with `service` as the
/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
pub fn init(service: &str, default_filter: &str) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_filter(filter);
    let spans = if export_configured(|name| std::env::var(name).ok()) { Some(std::sync::Arc::new(processor(service)?)) } else { None };
    let export = spans.clone().map(|processor| SpanExport { processor }.with_filter(Targets::new().with_target(SPAN_TARGET, tracing::Level::TRACE)));
    tracing_subscriber::registry().with(logs).with(export).try_init().map_err(|e| TelemetryError::Installed(e.to_string()))?;
    Ok(Telemetry { spans })
}

/// Whether the environment (read through `var`) asks for spans to be exported.
fn export_configured(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The SDK's batch processor over its OTLP/HTTP exporter (configured by the environment).
fn processor(service: &str) -> Result<BatchSpanProcessor, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    let resource = Resource::builder();
    let resource = if std::env::var_os("OTEL_SERVICE_NAME").is_some() { resource } else { resource.with_service_name(service.to_owned()) };
    processor.set_resource(&resource.build());
    Ok(processor)
}

/// The layer that turns Herald's span reports into OpenTelemetry spans.
struct SpanExport {
    processor: std::sync::Arc<BatchSpanProcessor>,
}

impl<S: tracing::Subscriber> Layer<S> for SpanExport {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != SPAN_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(span) = fields.into_span() {
            self.processor.on_end(span);
        }
    }
}

/// The fields of one span report.
#[derive(Default)]
struct Fields {
    trace_id: u128,
    span_id: u64,
    parent_span_id: u64,
    start: u64,
    end: u64,
    name: String,
    kind: String,
    error: bool,
    attributes: Vec<KeyValue>,
}

impl Fields {
    fn into_span(self) -> Option<SpanData> {
        if self.trace_id == 0 || self.span_id == 0 {
            return None;
        }
        let time = |nanos: u64| UNIX_EPOCH + Duration::from_nanos(nanos);
        let kind = match self.kind.as_str() {
            "server" => SpanKind::Server,
            "consumer" => SpanKind::Consumer,
            "producer" => SpanKind::Producer,
            "client" => SpanKind::Client,
            _ => SpanKind::Internal,
        };
        Some(SpanData {
            span_context: SpanContext::new(TraceId::from(self.trace_id), SpanId::from(self.span_id), TraceFlags::SAMPLED, false, TraceState::default()),
            parent_span_id: if self.parent_span_id == 0 { SpanId::INVALID } else { SpanId::from(self.parent_span_id) },
            parent_span_is_remote: self.parent_span_id != 0,
            span_kind: kind,
            name: Cow::Owned(self.name),
            start_time: if self.start == 0 { SystemTime::now() } else { time(self.start) },
            end_time: if self.end == 0 { SystemTime::now() } else { time(self.end) },
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: if self.error { Status::error("failed") } else { Status::Unset },
            instrumentation_scope: InstrumentationScope::builder("herald").with_version(env!("CARGO_PKG_VERSION")).build(),
        })
    }
}

impl Visit for Fields {
    fn record_u128(&mut self, field: &Field, value: u128) {
        if field.name() == "trace_id" {
            self.trace_id = value;
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "span_id" => self.span_id = value,
            "parent_span_id" => self.parent_span_id = value,
            "start_unix_nanos" => self.start = value,
            "end_unix_nanos" => self.end = value,
            other => self.attributes.push(KeyValue::new(other, i64::try_from(value).unwrap_or(i64::MAX))),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            "error" => self.error = value,
            other => self.attributes.push(KeyValue::new(other, value)),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "otel.name" => self.name = value.to_owned(),
            "otel.kind" => self.kind = value.to_owned(),
            other => self.attributes.push(KeyValue::new(other, value.to_owned())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_needs_an_endpoint_and_can_be_turned_off() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        assert!(!export_configured(env(&[])));
        assert!(!export_configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(export_configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])));
        assert!(export_configured(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")])));
        assert!(!export_configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(!export_configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_TRACES_EXPORTER", "none")])));
    }

    #[test]
    fn a_span_report_becomes_a_span_with_its_own_ids() {
        use tracing_subscriber::layer::SubscriberExt as _;
        #[derive(Default, Clone)]
        struct Seen(std::sync::Arc<std::sync::Mutex<Vec<SpanData>>>);
        struct Collect(Seen);
        impl<S: tracing::Subscriber> Layer<S> for Collect {
            fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
                let mut fields = Fields::default();
                event.record(&mut fields);
                if let Some(span) = fields.into_span() {
                    self.0 .0.lock().expect("lock").push(span);
                }
            }
        }
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(Collect(seen.clone()).with_filter(Targets::new().with_target(SPAN_TARGET, tracing::Level::TRACE)));
        let cause = herald_bus::trace::TraceContext::new_root();
        let mine = cause.child();
        let start = SystemTime::now();
        tracing::subscriber::with_default(subscriber, || {
            herald_bus::trace::SpanRecord::new("send shop.orders", herald_bus::trace::SpanKind::Producer, mine, Some(cause.span_id), start)
                .topic("shop.orders")
                .event("shop.orders.OrderConfirmed", "e-1")
                .actor("orders")
                .record();
            tracing::info!("an ordinary log line is not a span");
        });
        let spans = seen.0.lock().expect("lock").clone();
        assert_eq!(spans.len(), 1, "{spans:?}");
        let span = &spans[0];
        assert_eq!(span.span_context.trace_id(), TraceId::from(cause.trace_id));
        assert_eq!(span.span_context.span_id(), SpanId::from(mine.span_id));
        assert_eq!(span.parent_span_id, SpanId::from(cause.span_id));
        assert_eq!(span.span_kind, SpanKind::Producer);
        assert_eq!(span.name, "send shop.orders");
        let start_nanos = start.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos();
        assert_eq!(span.start_time.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos(), start_nanos);
        assert!(span.end_time >= span.start_time);
        let attribute = |key: &str| span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string());
        assert_eq!(attribute("messaging.destination.name").as_deref(), Some("shop.orders"));
        assert_eq!(attribute("ce.type").as_deref(), Some("shop.orders.OrderConfirmed"));
        assert_eq!(attribute("ce.id").as_deref(), Some("e-1"));
        assert_eq!(attribute("herald.actor").as_deref(), Some("orders"));
    }
}
