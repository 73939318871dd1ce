//! Against the real broker and the real registry (`HERALD_REGISTRY_URL`): Confluent-framed
//! events published by one publisher and single-object events by another share a topic,
//! and a consumer with the dual codec handles them all; an unknown schema id is
//! dead-lettered with its reason; a registry that is down fails the publish retryably.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_bus::dead_letter::{self, DeadLetter};
use herald_bus::{Consumer, Envelope, HandlerError, KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_registry::{CodecConfig, Confluent, Dual, Format, Registry, RegistryConfig};
use herald_shop::{OrderConfirmed, OrderEvent, OrderPlaced};
use herald_testkit::{kafka, read_all, record_count, topic, unique, wait_until};
use rdkafka::Message;
use running::Running;

use support::fake::FakeRegistry;
use support::{quick_backoff, real_registry};

const DEADLINE: Duration = Duration::from_secs(60);

fn order_id(e: &OrderEvent) -> String {
    match e {
        OrderEvent::Placed(p) => p.order_id.clone(),
        OrderEvent::Confirmed(c) => c.order_id.clone(),
        OrderEvent::Cancelled(c) => c.order_id.clone(),
    }
}

fn confluent_publisher(config: &KafkaConfig, registry: Registry) -> Publisher {
    Publisher::with_codec(config, PublisherOptions::new("/herald/registry-tests"), Arc::new(Confluent::new(registry))).expect("publisher")
}

/// A consumer of `orders` with the dual codec that records the order ids it handled.
async fn start_dual_consumer(config: &KafkaConfig, orders: &Topic<OrderEvent>, registry: Registry) -> (Running, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |e: Envelope<OrderEvent>| {
            seen.lock().expect("seen").push(order_id(&e.event));
            futures_ready()
        }
    };
    let confluent = Confluent::new(registry);
    let builder = Consumer::builder(config.clone(), unique("g.registry"))
        .subscribe(orders, handler)
        .codec(move |schemas| Arc::new(Dual::new(schemas, confluent.clone(), CodecConfig::new(Format::Confluent))));
    (Running::start(builder).await, seen)
}

fn futures_ready() -> std::future::Ready<Result<(), HandlerError>> {
    std::future::ready(Ok(()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_with_both_framings_is_handled_whole() {
    let config = kafka().await;
    let registry = real_registry();
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "registry.mixed", 2).await);

    let confluent = confluent_publisher(&config, registry.clone());
    let single = Publisher::new(&config, PublisherOptions::new("/herald/registry-tests")).expect("publisher");
    for i in 0..3 {
        confluent.publish(&orders, &OrderPlaced::example(&format!("c-{i}"), "cust", 100 + i)).await.expect("confluent publish");
        single.publish(&orders, &OrderPlaced::example(&format!("s-{i}"), "cust", 200 + i)).await.expect("single-object publish");
    }
    confluent
        .publish(&orders, &OrderConfirmed::example("c-0", "pay-1"))
        .await
        .expect("confluent publish");

    let raw = read_all(&config, orders.name(), 7, DEADLINE).await;
    let first_bytes: Vec<u8> = raw.iter().filter_map(|m| m.payload().and_then(|p| p.first().copied())).collect();
    assert_eq!(first_bytes.iter().filter(|b| **b == 0x00).count(), 4, "Confluent-framed records");
    assert_eq!(first_bytes.iter().filter(|b| **b == 0xC3).count(), 3, "single-object records");

    let (running, seen) = start_dual_consumer(&config, &orders, registry).await;
    wait_until(DEADLINE, "all seven records handled", || {
        let n = seen.lock().expect("seen").len();
        async move { n >= 7 }
    })
    .await;
    running.shutdown().await;
    let mut ids = seen.lock().expect("seen").clone();
    ids.sort();
    assert_eq!(ids, ["c-0", "c-0", "c-1", "c-2", "s-0", "s-1", "s-2"]);
    assert_eq!(record_count(&config, &dead_letter::topic_for(orders.name())).await, 0, "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_schema_id_is_dead_lettered_with_its_reason() {
    let config = kafka().await;
    let registry = real_registry();
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "registry.unknown", 1).await);
    let publisher = confluent_publisher(&config, registry.clone());

    // A valid Confluent record whose schema id the registry never issued.
    let mut record = publisher
        .encode(&orders, &OrderPlaced::example("ghost", "cust", 1), &herald_bus::Metadata::new("shop.orders.OrderPlaced", "/t", "ghost"))
        .await
        .expect("encoded");
    record.payload.as_mut().expect("a value")[1..5].copy_from_slice(&999_999_u32.to_be_bytes());
    publisher.send_record(record).await.expect("sent");
    publisher.publish(&orders, &OrderPlaced::example("after", "cust", 2)).await.expect("published");

    let (running, seen) = start_dual_consumer(&config, &orders, registry).await;
    let dlq = dead_letter::topic_for(orders.name());
    let letters = read_all(&config, &dlq, 1, DEADLINE).await;
    wait_until(DEADLINE, "the later event handled", || {
        let done = seen.lock().expect("seen").contains(&"after".to_owned());
        async move { done }
    })
    .await;
    running.shutdown().await;

    assert_eq!(letters.len(), 1, "one dead letter");
    let letter = DeadLetter::parse(&letters[0]).expect("dead letter headers");
    assert_eq!(letter.stage, "decode");
    assert!(letter.reason.contains("unknown schema id 999999"), "reason: {}", letter.reason);
    assert_eq!(letter.key.as_deref(), Some(&b"ghost"[..]));
    assert_eq!(seen.lock().expect("seen").as_slice(), ["after"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_while_the_registry_is_down_fails_retryably_and_sends_nothing() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "registry.down", 1).await);
    let fake = FakeRegistry::start().await;
    let registry = Registry::new(RegistryConfig::new(&fake.url).backoff(quick_backoff())).expect("client");
    let publisher = confluent_publisher(&config, registry);

    fake.set_down(true);
    let err = publisher.publish(&orders, &OrderPlaced::example("o-1", "cust", 1)).await.expect_err("registry answers 503");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("503"), "{err}");

    fake.set_down(false);
    publisher.publish(&orders, &OrderPlaced::example("o-1", "cust", 1)).await.expect("retry succeeds");
    publisher.flush(Duration::from_secs(10)).await.expect("flushed");
    assert_eq!(record_count(&config, orders.name()).await, 1, "only the successful publish was sent");

    // A registry that is not running at all (stopped server) is retryable too.
    let url = fake.url.clone();
    drop(fake);
    let stopped = Registry::new(RegistryConfig::new(url).backoff(quick_backoff())).expect("client");
    let err = confluent_publisher(&config, stopped)
        .publish(&orders, &OrderConfirmed::example("o-1", "p"))
        .await
        .expect_err("registry stopped");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_registry_credential_makes_the_consumer_wait_not_dead_letter() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "registry.auth", 1).await);
    let fake = FakeRegistry::start().await;
    let registry = Registry::new(RegistryConfig::new(&fake.url).backoff(quick_backoff())).expect("client");
    confluent_publisher(&config, registry).publish(&orders, &OrderPlaced::example("o-1", "cust", 1)).await.expect("published");

    // The consumer's credential is refused (a rotated secret): it must keep asking.
    fake.answer_all(Some(401));
    let consumer_registry = Registry::new(RegistryConfig::new(&fake.url).backoff(quick_backoff())).expect("client");
    let (running, seen) = start_dual_consumer(&config, &orders, consumer_registry).await;
    let before = fake.requests();
    wait_until(DEADLINE, "the consumer retries the schema fetch after 401s", || {
        let n = fake.requests();
        async move { n >= before + 2 * quick_backoff().attempts as usize }
    })
    .await;
    assert!(seen.lock().expect("seen").is_empty(), "nothing handled while the registry refuses");

    fake.answer_all(None);
    wait_until(DEADLINE, "the record handled once the credential works", || {
        let n = seen.lock().expect("seen").len();
        async move { n >= 1 }
    })
    .await;
    running.shutdown().await;
    assert_eq!(seen.lock().expect("seen").as_slice(), ["o-1"]);
    assert_eq!(record_count(&config, &dead_letter::topic_for(orders.name())).await, 0, "nothing dead-lettered");
}

/// A consumer running on its own task.
mod running {
    use herald_bus::ConsumerBuilder;
    use std::time::Duration;

    pub struct Running {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), herald_bus::ConsumerError>>,
    }

    impl Running {
        pub async fn start(builder: ConsumerBuilder) -> Running {
            let consumer = builder.build().await.expect("consumer builds");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(consumer.run(async move {
                let _ = stopped.await;
            }));
            Running { stop, task }
        }

        pub async fn shutdown(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(Duration::from_secs(60), self.task)
                .await
                .expect("consumer stops within 60 s")
                .expect("consumer task")
                .expect("consumer ran without error");
        }
    }
}
