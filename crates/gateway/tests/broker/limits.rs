//! 429 with Retry-After per principal and per route.

use crate::support::{self, order, Running};

/// The orders route on `topic` with `rate`, and API keys `key-a` and `key-b` for
/// principals `a` and `b`.
fn two_principals(topic: &str, rate: &str) -> String {
    let key = |id: &str, key: &str| format!("\n[[auth.api_key]]\nid = \"{id}\"\nsha256 = \"{}\"\nscopes = [\"orders:write\"]\n", herald_gateway::auth::hash_key(key));
    format!("{}rate = {rate}\n{}{}", support::orders_route(topic), key("a", "key-a"), key("b", "key-b"))
}

#[tokio::test]
async fn each_principal_gets_its_burst_then_429_with_retry_after() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.limits", 1).await;
    let toml = two_principals(&topic, "{ per_second = 1, burst = 2 }");
    let gateway = Running::start(&kafka, &toml).await;
    let body = order("c-1").to_string();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let (status, _, headers) = gateway.post_with("/orders", &body, &[("x-api-key", "key-a")]).await;
        statuses.push(status);
        if status == 429 {
            retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        }
    }
    assert_eq!(statuses, vec![202, 202, 429]);
    assert!(retry_after.is_some_and(|s| (1..=2).contains(&s)), "{retry_after:?}");
    let (status, _, _) = gateway.post_with("/orders", &body, &[("x-api-key", "key-b")]).await;
    assert_eq!(status, 202, "another principal has its own budget");
    support::events(&kafka, &topic, 3).await;
    herald_testkit::wait_until(std::time::Duration::from_secs(10), "3 records", || async { herald_testkit::record_count(&kafka, &topic).await == 3 }).await;
    gateway.stop().await;
}

#[tokio::test]
async fn the_route_limit_is_shared_by_all_principals() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.route-limit", 1).await;
    let toml = two_principals(&topic, "{ per_second = 100, route_per_second = 1, route_burst = 2 }");
    let gateway = Running::start(&kafka, &toml).await;
    let body = order("c-1").to_string();
    let mut answers = Vec::new();
    for key in ["key-a", "key-b", "key-a", "key-b"] {
        let (status, _, headers) = gateway.post_with("/orders", &body, &[("x-api-key", key)]).await;
        let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        answers.push((status, retry_after));
    }
    // Each principal is far below its own 100/s: the route's burst of 2 decides.
    assert_eq!(answers[..2], [(202, None), (202, None)]);
    for (status, retry_after) in &answers[2..] {
        assert_eq!(*status, 429, "{answers:?}");
        assert!(retry_after.is_some_and(|s| (1..=2).contains(&s)), "{answers:?}");
    }
    support::events(&kafka, &topic, 2).await;
    herald_testkit::wait_until(std::time::Duration::from_secs(10), "2 records", || async { herald_testkit::record_count(&kafka, &topic).await == 2 }).await;
    gateway.stop().await;
}

/// A body declared as something other than JSON is `415`; one that trickles in is `408`
/// at the deadline, not a connection held for as long as the client likes. Neither
/// publishes anything.
#[tokio::test]
async fn a_body_not_declared_json_is_415_and_a_body_that_never_arrives_is_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.media", 1).await;
    let text = support::config_text(&support::orders_route(&topic)).replace("deadline_ms = 5000", "deadline_ms = 1000");
    let config = herald_gateway::Config::parse(&text).unwrap();
    let gateway = Running::serve(herald_gateway::Gateway::new(config, &kafka, herald_gateway::Options::default()).await.unwrap(), &kafka).await;
    let body = order("c-1").to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = gateway.http.post(format!("{}/orders", gateway.url)).header("content-type", content_type).body(body.clone()).send().await.unwrap();
        let (status, problem) = support::answer(response).await;
        assert_eq!((status, problem["type"].as_str()), (415, Some("urn:herald:gateway:unsupported-media-type")), "{content_type}: {problem}");
    }
    let response = gateway.http.post(format!("{}/orders", gateway.url)).header("content-type", "application/json; charset=utf-8").body(body.clone()).send().await.unwrap();
    assert_eq!(response.status(), 202, "JSON with parameters is JSON");

    // Half the declared body, then nothing: the answer comes at the deadline.
    let address = gateway.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!("POST /orders HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..body.len() / 2]).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer)).await.expect("an answer before the client gives up").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "at the 1 s deadline: {:?}", started.elapsed());
    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, 1, "only the JSON request published");
    gateway.stop().await;
}
