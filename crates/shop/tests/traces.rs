//! Traces (issue 10 §5): one order is one trace, from the HTTP request to its terminal
//! event, across the gateway and every service, exported over OTLP.
//!
//! The test runs the main job (`shop-demo`: the gateway, the three roles, the view and
//! the tracker as processes) with the standard OpenTelemetry variables pointing at an
//! OTLP/HTTP receiver of its own (JSON encoding, as the OTLP specification defines it),
//! then checks what arrived: for every order the gateway accepted, the spans of its trace
//! come from the gateway, orders, inventory, the view and the tracker, end with the terminal event
//! (`OrderConfirmed` or `OrderCancelled`), and link up: every span's parent is the span
//! that wrote the event it handled, which is in the same trace.
//!
//! `cargo test -p herald-shop --test traces` (needs `KAFKA_BOOTSTRAP_SERVERS`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// The OTLP/HTTP receiver: `POST /v1/traces` with an `ExportTraceServiceRequest` in JSON.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<usize>>,
}

impl Receiver {
    fn accept(&self, body: &[u8]) -> Result<(), String> {
        let request: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let text = |v: &serde_json::Value| v.get("stringValue").and_then(|s| s.as_str()).map(str::to_owned).or_else(|| v.get("intValue").map(|i| i.to_string().trim_matches('"').to_owned()));
        let attributes = |list: &serde_json::Value| -> HashMap<String, String> {
            list.as_array().into_iter().flatten().filter_map(|kv| Some((kv.get("key")?.as_str()?.to_owned(), text(kv.get("value")?)?))).collect()
        };
        let mut found = Vec::new();
        for resource_spans in request["resourceSpans"].as_array().ok_or("no resourceSpans")? {
            let resource = attributes(&resource_spans["resource"]["attributes"]);
            let service = resource.get("service.name").cloned().ok_or("a resource without service.name")?;
            for scope in resource_spans["scopeSpans"].as_array().ok_or("no scopeSpans")? {
                for span in scope["spans"].as_array().ok_or("no spans")? {
                    let field = |name: &str| span.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                    found.push(Span { service: service.clone(), trace: field("traceId"), id: field("spanId"), parent: field("parentSpanId"), name: field("name"), attributes: attributes(&span["attributes"]) });
                }
            }
        }
        self.spans.lock().expect("lock").extend(found);
        *self.requests.lock().expect("lock") += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_order_is_one_trace_from_the_request_to_its_terminal_event() {
    let config = herald_testkit::kafka().await;
    let receiver = Receiver::default();
    let app = Router::new().route(
        "/v1/traces",
        post({
            let receiver = receiver.clone();
            move |body: axum::body::Bytes| async move {
                match receiver.accept(&body) {
                    Ok(()) => (axum::http::StatusCode::OK, [("content-type", "application/json")], "{}".to_owned()),
                    Err(e) => (axum::http::StatusCode::BAD_REQUEST, [("content-type", "text/plain")], e),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gateway_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/shop.toml");
    let bin_dir = herald_testkit::workspace_binaries(&["herald-shop", "herald-cli", "herald-gateway"]);
    let run_dir = std::env::temp_dir().join(herald_testkit::unique("shop-traces"));
    let summary = run_dir.join("summary.json");
    let driver = bin_dir.join("shop-demo");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(driver)
            .args(["--orders", "16", "--timeouts", "0", "--rate", "20", "--settle-timeout", "90s"])
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--bin-dir")
            .arg(&bin_dir)
            .arg("--gateway-config")
            .arg(&gateway_config)
            .arg("--summary")
            .arg(&summary)
            .env("KAFKA_BOOTSTRAP_SERVERS", config.bootstrap())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .output()
            .expect("shop-demo runs")
    })
    .await
    .expect("the driver's thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "shop-demo failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);

    // Every process flushed its spans when it stopped, before the driver returned; a
    // batch may still be on its way.
    let accepted_orders = |spans: &[Span]| -> BTreeSet<String> {
        spans.iter().filter(|s| s.service == "gateway" && s.attributes.get("ce.type").map(String::as_str) == Some("shop.orders.OrderPlaced")).map(|s| s.trace.clone()).collect()
    };
    // The span that wrote the terminal event (the view and the tracker read it too: their
    // spans carry its type, named `project ...`).
    let terminal = |s: &Span| s.name.starts_with("send ") && matches!(s.attributes.get("ce.type").map(String::as_str), Some("shop.orders.OrderConfirmed" | "shop.orders.OrderCancelled"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = receiver.spans.lock().expect("lock").clone();
        let traces = accepted_orders(&spans);
        let ended: BTreeSet<&String> = spans.iter().filter(|s| terminal(s)).map(|s| &s.trace).collect();
        if traces.len() >= 16 && traces.iter().all(|t| ended.contains(t)) {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans of 16 orders, each with its terminal event, within 30 s: {} orders, {} ended, {} spans in {} requests", traces.len(), ended.len(), spans.len(), receiver.requests.lock().expect("lock"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut by_trace: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for span in &spans {
        by_trace.entry(&span.trace).or_default().push(span);
    }
    let orders = accepted_orders(&spans);
    assert_eq!(orders.len(), 16, "one trace per order");
    let mut services_seen = BTreeSet::new();
    for trace in &orders {
        let trace_spans = &by_trace[trace.as_str()];
        let ids: BTreeSet<&str> = trace_spans.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), trace_spans.len(), "span ids are unique within trace {trace}: {trace_spans:#?}");
        let services: BTreeSet<&str> = trace_spans.iter().map(|s| s.service.as_str()).collect();
        // The three roles decide; the order-status view and the saga tracker (`herald saga
        // track`) project the same events, each in a span of the trace.
        for needed in ["gateway", "orders", "inventory", "order-status", "herald"] {
            assert!(services.contains(needed), "trace {trace} has spans of {needed}: {trace_spans:#?}");
        }
        services_seen.extend(services.iter().map(|s| (*s).to_owned()));
        // The gateway's request span is the root (the driver sent no traceparent); every
        // other span continues a span of the same trace.
        let roots: Vec<&&Span> = trace_spans.iter().filter(|s| s.parent.is_empty()).collect();
        assert_eq!(roots.len(), 1, "one root in trace {trace}: {trace_spans:#?}");
        assert_eq!(roots[0].service, "gateway", "{trace_spans:#?}");
        assert!(roots[0].name.starts_with("POST "), "{trace_spans:#?}");
        for span in trace_spans.iter().filter(|s| !s.parent.is_empty()) {
            assert!(ids.contains(span.parent.as_str()), "span {} ({} in {}) continues a span of its trace {trace}: {trace_spans:#?}", span.id, span.name, span.service);
        }
        let ends: Vec<&&Span> = trace_spans.iter().filter(|s| terminal(s)).collect();
        assert_eq!(ends.len(), 1, "one terminal event in trace {trace}: {trace_spans:#?}");
        assert_eq!(ends[0].service, "orders", "{trace_spans:#?}");
    }
    assert!(services_seen.contains("payments"), "payments took part in some order: {services_seen:?}");
}
