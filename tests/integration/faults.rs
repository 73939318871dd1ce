//! Fault injection: a producer that hits a fatal error fails its sends loudly, hands every
//! record back, and sends nothing more until it is reset; republished in order, nothing is
//! lost or reordered.

use herald_bus::{Metadata, PublishError, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, read_all, record_count, topic};
use rdkafka::bindings::{rd_kafka_resp_err_t, rd_kafka_test_fatal_error};
use rdkafka::producer::Producer;
use rdkafka::Message;

use crate::support::{publisher, DEADLINE};

/// librdkafka's own fault injection on a live producer connected to the real broker: the
/// fatal error an idempotent producer raises when the broker lost acknowledged records.
fn inject_fatal_error(producer: &herald_bus::publisher::Producer) {
    #[allow(unsafe_code)]
    // SAFETY: the pointer comes from a live producer that the caller's reference keeps
    // alive; the reason is a NUL-terminated static string.
    let injected = unsafe {
        rd_kafka_test_fatal_error(
            producer.client().native_ptr(),
            rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            c"injected by herald's fault test".as_ptr(),
        )
    };
    assert_eq!(injected, rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_producer_error_fails_queued_and_later_sends_until_reset_and_keeps_order() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "fatal", 1).await);
    // A long linger keeps records queued in the client until the fatal error purges them.
    let publisher = publisher(&config.clone().set("linger.ms", "60000"));
    let mut records = Vec::new();
    for amount in 0..7 {
        let event = OrderPlaced::example("cart-1", "c", amount);
        let meta = Metadata::new("shop.orders.OrderPlaced", "/herald/tests", "cart-1");
        records.push(publisher.encode(&orders, &event, &meta).await.expect("encode"));
    }

    // The first record is acknowledged before the fault (flush sends regardless of linger).
    let first = publisher.enqueue(records[0].clone()).await.expect("queued");
    publisher.flush(DEADLINE).await.expect("flushed");
    first.await.expect("the first record is acknowledged");

    // Five records wait in the client's queue when the producer fails fatally.
    let mut queued = Vec::new();
    for record in &records[1..6] {
        queued.push(publisher.enqueue(record.clone()).await.expect("queued"));
    }
    inject_fatal_error(&publisher.producer());

    // Every queued send fails with the typed fatal error and hands its record back intact.
    let mut handed_back = Vec::new();
    for (delivery, sent) in queued.into_iter().zip(&records[1..6]) {
        let error = tokio::time::timeout(DEADLINE, delivery).await.expect("a report").expect_err("purged, not acknowledged");
        assert!(matches!(error, PublishError::Fatal { .. }), "{error:?}");
        assert!(error.is_fatal() && !error.is_retryable() && !error.possibly_persisted(), "{error}");
        assert!(error.to_string().contains("reset"), "the error says what to do: {error}");
        let back = error.into_record().expect("the record comes back");
        assert_eq!((&back.topic, &back.key, &back.payload), (&sent.topic, &sent.key, &sent.payload));
        handed_back.push(back);
    }
    // Later sends fail the same way: the publisher does not switch producers by itself.
    assert!(publisher.fatal_error().is_some_and(|e| e.contains("injected by herald's fault test")), "{:?}", publisher.fatal_error());
    let later = publisher.send_record(records[6].clone()).await.expect_err("a failed publisher sends nothing");
    assert!(later.is_fatal(), "{later:?}");
    handed_back.push(later.into_record().expect("the record comes back"));
    assert_eq!(record_count(&config, orders.name()).await, 1, "nothing but the first record was written");

    // Reset, republish what came back in its order, and the log is the original sequence.
    assert!(publisher.reset(DEADLINE).await.expect("reset"), "a failed producer is replaced");
    assert!(publisher.fatal_error().is_none());
    assert!(!publisher.reset(DEADLINE).await.expect("reset"), "a healthy producer is kept");
    let mut deliveries = Vec::new();
    for record in handed_back {
        deliveries.push(publisher.enqueue(record).await.expect("queued"));
    }
    publisher.flush(DEADLINE).await.expect("flushed");
    for delivery in deliveries {
        delivery.await.expect("acknowledged after the reset");
    }
    let log = read_all(&config, orders.name(), records.len(), DEADLINE).await;
    let payloads: Vec<Option<&[u8]>> = log.iter().map(|m| m.payload()).collect();
    let sent: Vec<Option<&[u8]>> = records.iter().map(|r| r.payload.as_deref()).collect();
    assert_eq!(payloads, sent, "every record once, in the order it was first sent");
    assert_eq!(record_count(&config, orders.name()).await, records.len() as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letter_writer_resets_a_fatally_failed_publisher_and_delivers() {
    let config = kafka().await;
    let name = topic(&config, "fatal.dlq", 1).await;
    let publisher = publisher(&config);
    inject_fatal_error(&publisher.producer());
    let original = rdkafka::message::OwnedMessage::new(None, Some(b"k".to_vec()), "shop.orders".into(), rdkafka::Timestamp::NotAvailable, 0, 7, None);
    let failure = herald_bus::dead_letter::Failure { stage: herald_bus::dead_letter::Stage::Decode, reason: "no value".into(), attempts: 0 };
    let record = herald_bus::dead_letter::record(&original, &failure, "g", &name);
    let cancel = tokio_util::sync::CancellationToken::new();
    let sent = tokio::time::timeout(DEADLINE, herald_bus::dead_letter::send_until_acked(&publisher, &record, &cancel)).await;
    assert!(matches!(sent, Ok(Ok(()))), "written after the publisher was reset: {sent:?}");
    assert!(publisher.fatal_error().is_none());
    let letters = read_all(&config, &name, 1, DEADLINE).await;
    assert_eq!((letters[0].key(), letters[0].payload()), (Some(&b"k"[..]), None));
}

/// A sink whose partition 0 panics on its first delivery (outside any handler's guard),
/// and whose other partitions count what they are given.
struct PanicsOnPartitionZero {
    delivered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct CountingPartition {
    partition: i32,
    delivered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl herald_bus::runtime::Sink for PanicsOnPartitionZero {
    type Partition = CountingPartition;

    fn open(&self, _topic: &std::sync::Arc<str>, partition: i32) -> Option<CountingPartition> {
        Some(CountingPartition { partition, delivered: self.delivered.clone() })
    }
}

#[async_trait::async_trait]
impl herald_bus::runtime::PartitionSink for CountingPartition {
    async fn deliver(&mut self, batch: &[herald_bus::consumer::OwnedRecord], _attempt: u32, progress: &herald_bus::runtime::Progress, _cancel: &tokio_util::sync::CancellationToken) -> herald_bus::runtime::Delivery {
        assert_ne!(self.partition, 0, "a bug in the sink");
        for record in batch {
            progress.done(record.offset());
        }
        self.delivered.fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
        herald_bus::runtime::Delivery::Done
    }
}

/// A partition whose worker dies (a sink that panics) is paused and parked, with its
/// reason, and the consumer's other partitions go on. Before, the dead worker's records
/// were fetched and dropped while health said healthy, and their bytes were given back
/// twice: the consumer's byte count wrapped below zero and every partition stayed paused.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_whose_worker_dies_is_parked_and_the_others_go_on() {
    let config = kafka().await;
    let name = topic(&config, "worker.dies", 2).await;
    let publisher = publisher(&config);
    let send = |partition: i32, n: usize| {
        let (publisher, name) = (publisher.clone(), name.clone());
        async move {
            let mut deliveries = Vec::with_capacity(n);
            for i in 0..n {
                let record = herald_bus::publisher::Record::new(&name, format!("k-{partition}-{i}"), b"v".to_vec(), Default::default()).to_partition(partition);
                deliveries.push(publisher.enqueue(record).await.expect("queued"));
            }
            for delivery in deliveries {
                delivery.await.expect("sent");
            }
        }
    };
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut settings = herald_bus::runtime::Settings::new(herald_testkit::unique("g.worker.dies"), vec![name.clone()]);
    settings.properties.push(("auto.offset.reset".into(), "earliest".into()));
    // A small budget: a wrapped byte count shows at once as every partition paused.
    settings.max_buffered_bytes = 64 << 10;
    let letters = std::sync::Arc::new(herald_bus::runtime::dead_letter::DeadLetters { publisher: publisher.clone(), group: "g".into() });
    let runtime = herald_bus::runtime::Runtime::new(&config, settings, PanicsOnPartitionZero { delivered: delivered.clone() }, letters).expect("runtime");
    let health = runtime.health();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(runtime.run(async move {
        let _ = stopped.await;
    }));
    send(0, 1).await;
    send(1, 1).await;
    herald_testkit::wait_until(DEADLINE, "partition 1 delivered", || async { delivered.load(std::sync::atomic::Ordering::SeqCst) >= 1 }).await;
    herald_testkit::wait_until(DEADLINE, "partition 0 parked", || async { health.parked().iter().any(|(_, p, _)| *p == 0) }).await;
    // More for the dead worker (fetched before the pause took effect, or not), then
    // plenty for partition 1.
    send(0, 50).await;
    assert!(!health.is_healthy(), "a parked partition makes the consumer unhealthy");
    assert!(health.parked()[0].2.contains("ended unexpectedly"), "{:?}", health.parked());
    send(1, 2000).await;
    herald_testkit::wait_until(DEADLINE, "partition 1 goes on", || async { delivered.load(std::sync::atomic::Ordering::SeqCst) >= 2001 }).await;
    let _ = stop.send(());
    running.await.expect("joined").expect("ran");
}

/// A topic whose `max.message.bytes` (20 000) is below librdkafka's batch size: the broker
/// refuses a whole batch of records that each fit, and librdkafka does not split it. The
/// error says so and what to set; with `batch.size` under the topic's limit every record
/// is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_over_its_topics_limit_fails_saying_to_lower_batch_size_and_fits_once_lowered() {
    let config = kafka().await;
    let name = herald_testkit::unique("small");
    let spec = herald_bus::admin::TopicSpec::new(&name).partitions(1).config("max.message.bytes", "20000");
    herald_bus::admin::create_topics(&config, &[spec]).await.expect("topic");
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    let events: Vec<OrderPlaced> = (0..2_000).map(|i| OrderPlaced::example(&format!("cart-{i}"), "c", i)).collect();
    // A long linger gathers the records into large batches.
    let batched = publisher(&config.clone().set("linger.ms", "200"));
    let results = batched.publish_all(&orders, &events).await;
    let refused = results.iter().filter_map(|r| r.as_ref().err()).next().expect("some batch over 20 000 bytes is refused");
    assert!(refused.to_string().contains("set batch.size below the topic's limit"), "{refused}");
    let written = record_count(&config, &name).await;
    let fitting = publisher(&config.clone().set("linger.ms", "200").set("batch.size", "18000"));
    assert!(fitting.publish_all(&orders, &events).await.iter().all(Result::is_ok), "every record is written");
    assert_eq!(record_count(&config, &name).await, written + events.len() as i64);
}

/// `topic_configs` reads one config of several topics in one request, an answer per topic
/// in the order asked: each topic's own value, `None` for one that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn topic_configs_answer_for_each_topic_in_order_and_none_for_a_missing_one() {
    use herald_bus::admin::{create_topics, topic_config, topic_configs, TopicSpec};
    let config = kafka().await;
    let (small, large, missing) = (herald_testkit::unique("limit.small"), herald_testkit::unique("limit.large"), herald_testkit::unique("limit.missing"));
    create_topics(&config, &[TopicSpec::new(&small).partitions(1).config("max.message.bytes", "20000"), TopicSpec::new(&large).partitions(1).config("max.message.bytes", "3000000")]).await.expect("topics");
    let read = topic_configs(&config, &[&large, &missing, &small], "max.message.bytes").await.expect("described");
    let read: Vec<Option<String>> = read.into_iter().map(|answer| answer.expect("an answer")).collect();
    assert_eq!(read, [Some("3000000".to_owned()), None, Some("20000".to_owned())]);
    assert_eq!(topic_config(&config, &small, "max.message.bytes").await.expect("described").as_deref(), Some("20000"));
    assert!(topic_configs(&config, &[], "max.message.bytes").await.expect("nothing asked").is_empty());
}
