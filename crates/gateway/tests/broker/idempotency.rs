//! Idempotency-Key: same id and response, one event; 422 for another body; the same after
//! a restart, on another instance that has read the record, and when two instances get
//! the key at the same moment.

use std::time::Duration;

use herald_gateway::{Config, Gateway, Options};

use crate::support::{self, order, Running};

#[tokio::test]
async fn a_replayed_key_gets_the_same_answer_and_no_second_event_also_after_a_restart() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.idem", 3).await;
    let toml = format!("{}{}", support::idempotency_section(), support::orders_route(&topic));
    let gateway = Running::start(&kafka, &toml).await;
    let mut body = order("c-1");
    body["order_id"] = "o-idem-1".into();
    let body = body.to_string();
    let key = [("idempotency-key", "order-o-idem-1")];

    let (status, first, headers) = gateway.post_with("/orders", &body, &key).await;
    assert_eq!(status, 202, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, again, headers) = gateway.post_with("/orders", &body, &key).await;
    assert_eq!((status, &again), (202, &first));
    assert_eq!(headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));

    let mut other = order("c-2");
    other["order_id"] = "o-idem-1".into();
    let (status, problem, _) = gateway.post_with("/orders", &other.to_string(), &key).await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:herald:gateway:idempotency-key-reused")), "{problem}");

    // A failed request does not use the key up: a 400 first, then the fixed body publishes.
    let fix_key = [("idempotency-key", "order-o-idem-2")];
    let (status, _, _) = gateway.post_with("/orders", "{\"customer_id\": 1}", &fix_key).await;
    assert_eq!(status, 400);
    let mut fixed = order("c-3");
    fixed["order_id"] = "o-idem-2".into();
    let (status, second, _) = gateway.post_with("/orders", &fixed.to_string(), &fix_key).await;
    assert_eq!(status, 202, "{second}");

    // The same principal and key always derive the same event id (a UUIDv8).
    let id = uuid::Uuid::parse_str(first["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 8);

    // Restart: a new gateway on the same idempotency topic replays from it.
    gateway.stop().await;
    let gateway = Running::start(&kafka, &toml).await;
    let (status, after_restart, headers) = gateway.post_with("/orders", &body, &key).await;
    assert_eq!((status, &after_restart), (202, &first));
    assert!(headers.get("idempotent-replayed").is_some());
    let (status, _, _) = gateway.post_with("/orders", &other.to_string(), &key).await;
    assert_eq!(status, 422, "a different body is refused after the restart too");

    let events = support::events(&kafka, &topic, 2).await;
    let ids: Vec<&str> = events.iter().map(|e| e.headers["ce_id"].as_str()).collect();
    assert!(ids.contains(&first["id"].as_str().unwrap()) && ids.contains(&second["id"].as_str().unwrap()), "{ids:?}");
    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, 2, "one event per key");
    gateway.stop().await;
}

#[tokio::test]
async fn another_instance_replays_once_it_has_read_the_record() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.idem", 3).await;
    let toml = format!("{}{}", support::idempotency_section(), support::orders_route(&topic));
    let a = Running::start(&kafka, &toml).await;
    let config = Config::parse(&support::config_text(&toml)).unwrap();
    let b_gateway = Gateway::new(config, &kafka, Options::default()).await.unwrap();
    let before = b_gateway.idempotency_records();
    let b_handle = b_gateway.clone();
    let b = Running::serve(b_gateway, &kafka).await;

    let body = order("c-1").to_string();
    let key = [("idempotency-key", "k-shared")];
    let (status, first, _) = a.post_with("/orders", &body, &key).await;
    assert_eq!(status, 202, "{first}");
    herald_testkit::wait_until(Duration::from_secs(10), "instance b read a's record", || {
        let n = b_handle.idempotency_records();
        async move { n > before }
    })
    .await;
    let (status, on_b, headers) = b.post_with("/orders", &body, &key).await;
    assert_eq!((status, &on_b), (202, &first));
    assert!(headers.get("idempotent-replayed").is_some());
    support::events(&kafka, &topic, 1).await;
    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_instances_given_one_key_at_the_same_moment_publish_one_event() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.idem-race", 3).await;
    let toml = format!("{}{}", support::idempotency_section(), support::orders_route(&topic));
    let a = Running::start(&kafka, &toml).await;
    let b = Running::start(&kafka, &toml).await;
    let keys: Vec<String> = (0..20).map(|i| format!("k-race-{i}")).collect();
    let body = order("c-race").to_string();
    let mut first_ids = std::collections::BTreeMap::new();
    for key in &keys {
        // The same request on both instances at once, as a client retrying through a
        // load balancer while its first try is still in flight.
        let header = [("idempotency-key", key.as_str())];
        let ((status_a, answer_a, _), (status_b, answer_b, _)) = tokio::join!(a.post_with("/orders", &body, &header), b.post_with("/orders", &body, &header));
        let mut accepted = Vec::new();
        for (status, answer) in [(status_a, &answer_a), (status_b, &answer_b)] {
            match status {
                202 => accepted.push(answer["id"].as_str().unwrap().to_owned()),
                409 => assert_eq!(answer["type"], "urn:herald:gateway:idempotency-key-in-progress", "{answer}"),
                other => panic!("{key}: {other} {answer}"),
            }
        }
        accepted.dedup();
        assert_eq!(accepted.len(), 1, "{key}: one event id among the answers: {answer_a} {answer_b}");
        first_ids.insert(key.clone(), accepted.remove(0));
    }
    // A retry of a 409 gets the owner's 202 once its record is read, on either instance.
    for key in &keys {
        let header = [("idempotency-key", key.as_str())];
        for gateway in [&a, &b] {
            herald_testkit::wait_until(Duration::from_secs(10), "the key's 202 replayed", || async {
                let (status, answer, _) = gateway.post_with("/orders", &body, &header).await;
                status == 202 && answer["id"].as_str() == Some(first_ids[key].as_str())
            })
            .await;
        }
    }
    // One event per key in the topic, and no other.
    let events = support::events(&kafka, &topic, keys.len()).await;
    let ids: std::collections::BTreeSet<&str> = events.iter().map(|e| e.headers["ce_id"].as_str()).collect();
    assert_eq!(ids, first_ids.values().map(String::as_str).collect());
    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, keys.len() as i64, "no second event for any key");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_unusable_key_is_a_400_and_publishes_nothing() {
    let kafka = herald_testkit::kafka().await;
    let topic = herald_testkit::topic(&kafka, "gw.idem", 1).await;
    let gateway = Running::start(&kafka, &support::orders_route(&topic)).await;
    let long = "k".repeat(300);
    for key in [long.as_str(), ""] {
        let (status, problem, _) = gateway.post_with("/orders", &order("c-1").to_string(), &[("idempotency-key", key)]).await;
        assert_eq!((status, problem["type"].as_str()), (400, Some("urn:herald:gateway:invalid-idempotency-key")), "{problem}");
    }
    // Two keys on one request: which one was meant is unknown (before, the first was used
    // and the other ignored).
    let (status, problem, _) = gateway.post_with("/orders", &order("c-1").to_string(), &[("idempotency-key", "k-a"), ("idempotency-key", "k-b")]).await;
    assert_eq!((status, problem["type"].as_str()), (400, Some("urn:herald:gateway:invalid-idempotency-key")), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("several")), "{problem}");
    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, 0);
    gateway.stop().await;
}

/// A topic that does not exist (the broker does not auto-create topics) makes a send wait
/// until the deadline: meanwhile the same key gets 409, then the first request gets 503
/// within its deadline, and the key is free again.
#[tokio::test]
async fn the_same_key_while_in_progress_is_a_409_and_a_failed_send_frees_the_key() {
    let kafka = herald_testkit::kafka().await;
    let missing = herald_testkit::unique("gw.missing");
    let text = support::config_text(&support::orders_route(&missing)).replace("deadline_ms = 5000", "deadline_ms = 1500");
    let config = Config::parse(&text).unwrap();
    let gateway = Running::serve(Gateway::new(config, &kafka, Options::default()).await.unwrap(), &kafka).await;
    let gateway = std::sync::Arc::new(gateway);
    let body = order("c-1").to_string();
    let first = {
        let (gateway, body) = (gateway.clone(), body.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (status, problem, headers) = gateway.post_with("/orders", &body, &[("idempotency-key", "k-slow")]).await;
            (status, problem, headers.contains_key("retry-after"), started.elapsed())
        })
    };
    let mut saw_busy = false;
    while !first.is_finished() {
        let (status, _, headers) = gateway.post_with("/orders", &body, &[("idempotency-key", "k-slow")]).await;
        if status == 409 {
            assert!(headers.contains_key("retry-after"));
            saw_busy = true;
            break;
        }
        assert!(first.is_finished() || status == 409, "while the first is in progress the key is busy, got {status}");
    }
    let (status, problem, retry_after, elapsed) = first.await.unwrap();
    assert!(saw_busy, "a second request with the key while the first was in progress got 409");
    assert_eq!(status, 503, "{problem}");
    assert!(retry_after);
    assert!(elapsed < Duration::from_millis(1500 + 1000), "answered within the deadline: {elapsed:?}");
    // The failure recorded nothing: the key is usable again (and fails the same way, no 409/422).
    let (status, _, _) = gateway.post_with("/orders", &body, &[("idempotency-key", "k-slow")]).await;
    assert_eq!(status, 503);
}

/// A client that hangs up while its request is at the broker does not abandon it: the
/// request runs to its end (here: the event lands once its topic exists, and its `202` is
/// recorded), so the client's retry with the key gets that `202`, not `409` until the
/// claim expires and then a second event.
#[tokio::test]
async fn a_client_that_hangs_up_mid_request_gets_its_answer_on_retry() {
    let kafka = herald_testkit::kafka().await;
    // The broker does not auto-create topics: a send to this one waits until it exists.
    let topic = herald_testkit::unique("gw.idem-hangup");
    let gateway = Running::start(&kafka, &support::orders_route(&topic)).await;
    let body = order("c-hangup").to_string();
    let key = [("idempotency-key", "k-hangup")];
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let hung_up = impatient.post(format!("{}/orders", gateway.url)).header("content-type", "application/json").header(key[0].0, key[0].1).body(body.clone()).send().await;
    assert!(hung_up.as_ref().is_err_and(reqwest::Error::is_timeout), "the client gave up: {hung_up:?}");
    herald_bus::admin::create_topics(&kafka, &[herald_bus::admin::TopicSpec::new(&topic).partitions(1)]).await.unwrap();
    herald_testkit::wait_until(Duration::from_secs(10), "the retry replays the first request's 202", || async {
        let (status, answer, headers) = gateway.post_with("/orders", &body, &key).await;
        assert!(status == 202 || status == 409, "{status} {answer}");
        status == 202 && headers.contains_key("idempotent-replayed")
    })
    .await;
    assert_eq!(herald_testkit::record_count(&kafka, &topic).await, 1, "one event");
    gateway.stop().await;
}
