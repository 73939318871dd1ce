//! Fault injection: a producer that hits a fatal error is replaced, and nothing published
//! is lost.

use herald_bus::Topic;
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, wait_until};
use rdkafka::bindings::{rd_kafka_resp_err_t, rd_kafka_test_fatal_error};
use rdkafka::producer::Producer;

use crate::support::{publisher, DEADLINE};

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_producer_error_is_survived_by_replacing_the_producer() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "fatal", 1).await);
    let publisher = publisher(&config);
    publisher.publish(&orders, &OrderPlaced::example("before", "c", 1)).await.expect("first event");

    // librdkafka's own fault injection: the error an idempotent producer raises when the
    // broker lost acknowledged records.
    let broken = publisher.producer();
    #[allow(unsafe_code)]
    // SAFETY: the pointer comes from a live producer that `broken` keeps alive; the reason
    // is a NUL-terminated static string.
    let injected = unsafe {
        rd_kafka_test_fatal_error(
            broken.client().native_ptr(),
            rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            c"injected by herald's fault test".as_ptr(),
        )
    };
    assert_eq!(injected, rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    assert!(broken.client().fatal_error().is_some());

    // The send on the broken producer fails, retryably; the publisher then replaces it.
    let failed = publisher.publish(&orders, &OrderPlaced::example("during", "c", 2)).await;
    let error = failed.expect_err("a fatal producer cannot send");
    assert!(error.is_retryable(), "{error}");
    // Republishing after the failure works (the publisher replaced its producer).
    wait_until(DEADLINE, "a publish succeeds again", || async {
        publisher.publish(&orders, &OrderPlaced::example("during", "c", 2)).await.is_ok()
    })
    .await;
    assert!(publisher.producer().client().fatal_error().is_none(), "a fresh producer");
    let records = herald_testkit::read_all(&config, orders.name(), 2, DEADLINE).await;
    let keys: Vec<_> = records.iter().map(|m| rdkafka::Message::key(m).map(<[u8]>::to_vec)).collect();
    assert_eq!(keys, vec![Some(b"before".to_vec()), Some(b"during".to_vec())]);
}
