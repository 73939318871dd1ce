//! The place-order route: 202 only with the event in the topic; 400/404/405/413 never
//! publish.

use std::time::Duration;

use crate::support::{self, order, Running};

#[tokio::test]
async fn an_accepted_order_is_in_the_topic_with_its_fills_key_and_trace() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.orders", 3).await;
    let gateway = Running::start(&kafka, &support::orders_route(&topic)).await;
    let before = chrono::Utc::now().timestamp_millis();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = gateway
        .http
        .post(format!("{}/orders", gateway.url))
        .header("traceparent", traceparent)
        .json(&order("c-1"))
        .send()
        .await
        .unwrap();
    let (status, body) = support::answer(response).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["topic"], topic.as_str());
    let events = support::events(&kafka, &topic, 1).await;
    let event = &events[0];
    assert_eq!((event.partition as i64, event.offset), (body["partition"].as_i64().unwrap(), body["offset"].as_i64().unwrap()));
    assert_eq!(event.headers["ce_id"], body["id"].as_str().unwrap());
    assert_eq!(event.headers["ce_type"], "shop.orders.OrderPlaced");
    assert_eq!(event.headers["ce_subject"], event.key);
    let order_id = uuid::Uuid::parse_str(&event.key).unwrap();
    assert_eq!(order_id.get_version_num(), 7, "order_id generated as a UUIDv7");
    assert_eq!(event.body["order_id"], event.key.as_str());
    assert_eq!(event.body["customer_id"], "c-1");
    let placed_at = event.body["placed_at"].as_i64().unwrap();
    assert!(placed_at >= before && placed_at <= chrono::Utc::now().timestamp_millis(), "placed_at = {placed_at}");
    let trace = &event.headers["traceparent"];
    assert!(trace.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "same trace: {trace}");
    assert_ne!(trace, traceparent, "the event is a child span of the request");
    gateway.stop().await;
}

#[tokio::test]
async fn tracestate_goes_with_a_continued_trace_only() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.orders", 1).await;
    let gateway = Running::start(&kafka, &support::orders_route(&topic)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    // Valid, then invalid (upper-case hex: W3C Trace Context says to start a new trace and
    // not to parse the tracestate that came with it).
    for traceparent in [format!("00-{trace_id}-00f067aa0ba902b7-01"), format!("00-{}-00f067aa0ba902b7-01", trace_id.to_uppercase())] {
        let response = gateway.http.post(format!("{}/orders", gateway.url)).header("traceparent", traceparent).header("tracestate", "vendor=opaque").json(&order("c-9")).send().await.unwrap();
        let (status, body) = support::answer(response).await;
        assert_eq!(status, 202, "{body}");
    }
    let events = support::events(&kafka, &topic, 2).await;
    let (continued, fresh) = (&events[0], &events[1]);
    assert!(continued.headers["traceparent"].starts_with(&format!("00-{trace_id}-")), "{:?}", continued.headers);
    assert_eq!(continued.headers.get("tracestate").map(String::as_str), Some("vendor=opaque"));
    assert!(!fresh.headers["traceparent"].contains(trace_id), "a new trace: {:?}", fresh.headers);
    assert_eq!(fresh.headers.get("tracestate"), None, "no tracestate on a new trace");
    gateway.stop().await;
}

#[tokio::test]
async fn a_given_order_id_is_the_key_and_several_orders_land_once_each() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.orders", 3).await;
    let gateway = Running::start(&kafka, &support::orders_route(&topic)).await;
    let mut ids = std::collections::BTreeSet::new();
    for n in 0..5 {
        let mut body = order("c-2");
        body["order_id"] = format!("o-{n}").into();
        let (status, answer) = gateway.post("/orders", &body.to_string()).await;
        assert_eq!(status, 202, "{answer}");
        ids.insert(answer["id"].as_str().unwrap().to_owned());
    }
    let events = support::events(&kafka, &topic, 5).await;
    let keys: std::collections::BTreeSet<_> = events.iter().map(|e| e.key.clone()).collect();
    assert_eq!(keys, (0..5).map(|n| format!("o-{n}")).collect());
    let seen: std::collections::BTreeSet<_> = events.iter().map(|e| e.headers["ce_id"].clone()).collect();
    assert_eq!(seen, ids);
    gateway.stop().await;
}

#[tokio::test]
async fn bad_requests_get_problem_json_naming_the_field_and_never_an_event() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.orders", 3).await;
    let gateway = Running::start(&kafka, &support::orders_route(&topic)).await;

    let mut wrong_type = order("c-3");
    wrong_type["lines"][0]["quantity"] = "two".into();
    let (status, problem) = gateway.post("/orders", &wrong_type.to_string()).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "urn:herald:gateway:invalid-body");
    assert_eq!(problem["errors"][0]["field"], "lines[0].quantity");
    assert_eq!(problem["errors"][0]["pointer"], "/lines/0/quantity");
    assert!(problem["errors"][0]["detail"].as_str().unwrap().contains("expected int"), "{problem}");

    let mut missing = order("c-3");
    missing.as_object_mut().unwrap().remove("currency");
    let (status, problem) = gateway.post("/orders", &missing.to_string()).await;
    assert_eq!((status, problem["errors"][0]["field"].as_str()), (400, Some("currency")), "{problem}");

    // Every problem of the body is listed, not only the first (the outside probe's body
    // had five and got one entry).
    let several = r#"{"customer_id":5,"total_cents":"x","currency":"EUR","lines":[{"sku":"b","quantity":"x","unit_price_cents":"y"}],"bogus":1}"#;
    let (status, problem) = gateway.post("/orders", several).await;
    assert_eq!(status, 400, "{problem}");
    let fields: Vec<&str> = problem["errors"].as_array().unwrap().iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["customer_id", "total_cents", "lines[0].unit_price_cents", "lines[0].quantity", "bogus"], "in the schema's field order: {problem}");

    let mut unknown = order("c-3");
    unknown["colour"] = "red".into();
    let (status, problem) = gateway.post("/orders", &unknown.to_string()).await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("colour"), "{problem}");

    for malformed in ["{\"customer_id\": ", "[1,2]", "\"text\"", ""] {
        let (status, problem) = gateway.post("/orders", malformed).await;
        assert_eq!(status, 400, "{malformed:?}: {problem}");
        assert_eq!(problem["type"], "urn:herald:gateway:malformed-body");
    }
    // A key given twice means one thing to a reader that keeps the first and another to
    // one that keeps the last (serde_json, JavaScript): refused, naming the key.
    let valid = order("c-3").to_string();
    let twice = format!("{{\"total_cents\": 1, {}", &valid[1..]);
    let (status, problem) = gateway.post("/orders", &twice).await;
    assert_eq!((status, problem["type"].as_str()), (400, Some("urn:herald:gateway:malformed-body")), "{twice}: {problem}");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("\"total_cents\" given twice"), "{problem}");

    let (status, problem) = gateway.post("/no-such-route", &order("c-3").to_string()).await;
    assert_eq!((status, problem["type"].as_str()), (404, Some("urn:herald:gateway:not-found")));
    let response = gateway.http.get(format!("{}/orders", gateway.url)).send().await.unwrap();
    assert_eq!(support::answer(response).await.0, 405);

    let mut oversized = order("c-3");
    oversized["note"] = "x".repeat(5000).into();
    let (status, problem) = gateway.post("/orders", &oversized.to_string()).await;
    assert_eq!((status, problem["type"].as_str()), (413, Some("urn:herald:gateway:too-large")), "{problem}");
    // Without Content-Length (chunked), the limit holds while reading.
    let status_line = chunked_post(&gateway.url, &oversized.to_string()).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, 0, "no bad request became an event");
    // The gateway still works, and that event is the only one.
    let (status, _) = gateway.post("/orders", &order("c-3").to_string()).await;
    assert_eq!(status, 202);
    support::events(&kafka, &topic, 1).await;
    herald_testkit::wait_until(Duration::from_secs(10), "one record", || async { herald_testkit::record_count(&kafka, &topic).await == 1 }).await;
    gateway.stop().await;
}

/// POSTs `body` to /orders in 1000-byte chunks (no Content-Length); the status line.
async fn chunked_post(url: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    let mut request = b"POST /orders HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.as_bytes().chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything: ignore a failed write.
    let _ = stream.write_all(&request).await;
    let mut answer = vec![0u8; 512];
    let n = stream.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn health_is_ok_while_the_broker_is_up() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.orders", 1).await;
    let gateway = Running::start(&kafka, &support::orders_route(&topic)).await;
    let response = gateway.http.get(format!("{}/health", gateway.url)).send().await.unwrap();
    let (status, body) = support::answer(response).await;
    assert_eq!((status, body["details"]["breaker"].as_str()), (200, Some("closed")), "{body}");
    gateway.stop().await;
}

#[tokio::test]
async fn openapi_describes_the_routes_from_their_schemas() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.orders", 1).await;
    let gateway = Running::start(&kafka, &support::orders_route(&topic)).await;
    let response = gateway.http.get(format!("{}/openapi.json", gateway.url)).send().await.unwrap();
    let (status, doc) = support::answer(response).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let operation = &doc["paths"]["/orders"]["post"];
    assert_eq!(operation["operationId"], "place-order");
    let body = &operation["requestBody"]["content"]["application/json"]["schema"];
    let required: Vec<&str> = body["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, vec!["customer_id", "total_cents", "currency", "lines"], "order_id is generated, placed_at is the gateway's");
    assert_eq!(body["properties"]["placed_at"]["readOnly"], true);
    assert_eq!(body["properties"]["order_id"]["minLength"], 1, "the key field is refused when empty");
    assert_eq!(body["properties"]["total_cents"]["format"], "int64");
    assert_eq!(body["properties"]["lines"]["items"]["$ref"], "#/components/schemas/shop.orders.OrderLine");
    let line = &doc["components"]["schemas"]["shop.orders.OrderLine"];
    assert_eq!(line["properties"]["quantity"]["format"], "int32");
    for status in ["202", "400", "413", "422", "503"] {
        assert!(operation["responses"].get(status).is_some(), "response {status}");
    }
    gateway.stop().await;
}
