//! In-process faults that must neither wedge silently nor run forever: a poison record
//! whose dead letter can never be written (too large for the dead-letter topic) parks its
//! partition, says why, and reports the projector unhealthy; a deleted topic ends `run`
//! with an error; a current-thread runtime is refused with a clear error.

use std::time::Duration;

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::{dead_letter, Envelope, RetryPolicy, Topic};
use herald_ops::HealthCheck;
use herald_projector::{store, Projection, ProjectionError, Projector, ProjectorError, Tx};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Refuses orders whose note says so, permanently.
struct Picky;

impl Projection<OrderEvent> for Picky {
    const NAME: &'static str = "picky";

    fn migrate(&self, _tx: &mut dyn Tx) -> Result<(), ProjectionError> {
        Ok(())
    }

    fn apply(&self, _tx: &mut dyn Tx, event: &Envelope<OrderEvent>) -> Result<(), ProjectionError> {
        match &event.event {
            OrderEvent::Placed(p) if p.note.as_deref().is_some_and(|n| n.starts_with("refuse")) => Err(ProjectionError::Permanent("refused".into())),
            _ => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_too_large_for_its_topic_parks_the_partition() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.parked", 1).await);
    let dlq = TopicSpec::new(dead_letter::topic_for(orders.name())).partitions(1).config("max.message.bytes", "1024");
    create_topics(&config, &[dlq]).await.expect("dead-letter topic");
    let publisher = publisher(&config);
    let big = OrderPlaced { note: Some(format!("refuse {}", "x".repeat(4000))), ..OrderPlaced::example("o-2", "c", 2) };
    for event in [OrderPlaced::example("o-1", "c", 1), big, OrderPlaced::example("o-3", "c", 3)] {
        publisher.publish(&orders, &event).await.expect("published");
    }
    let projector = Projector::builder(config.clone(), unique("g.parked"), &orders, Picky, store::open(&store_url).expect("store"))
        .retry(RetryPolicy { max_attempts: 2, initial: Duration::from_millis(10), max: Duration::from_millis(50), ..Default::default() })
        .build()
        .await
        .expect("builds");
    let status = projector.status();
    let stop = CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone().cancelled_owned()));
    wait_until(DEADLINE, "the partition is parked", || async { status.get().partitions.first().is_some_and(|p| p.state == "parked") }).await;
    let partition = status.get().partitions[0].clone();
    assert_eq!(partition.position, Some(1), "stopped at the poison record, nothing skipped");
    let why = partition.last_error.unwrap_or_default();
    assert!(why.contains("dead letter cannot be written") && why.contains("MessageSizeTooLarge"), "{why}");
    assert!(!status.check().0, "a parked partition makes the projector unhealthy");
    // It stays there: no loop moves it, no retry storm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status.get().partitions[0].position, Some(1));
    stop.cancel();
    tokio::time::timeout(DEADLINE, running).await.expect("stops").expect("task").expect("runs");
}

#[tokio::test]
async fn a_current_thread_runtime_is_refused_with_a_clear_error() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(unique("never.created"));
    let built = Projector::builder(config, unique("g"), &orders, Picky, store::open(&store_url).expect("store")).build().await;
    match built {
        Err(e @ ProjectorError::Consumer(_)) => assert!(e.to_string().contains("multi-threaded runtime"), "{e}"),
        Err(other) => panic!("expected the current-thread refusal, got {other}"),
        Ok(_) => panic!("a projector on a current-thread runtime must be refused"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_topic_ends_run_with_an_error() {
    let Some(store_url) = fresh_store(Backend::Sqlite).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.deleted", 1).await);
    publisher(&config).publish(&orders, &OrderPlaced::example("o-1", "c", 1)).await.expect("published");
    let projector = Projector::builder(config.clone(), unique("g.deleted"), &orders, Picky, store::open(&store_url).expect("store"))
        .create_dead_letter_topic(false)
        .build()
        .await
        .expect("builds");
    let status = projector.status();
    let running = tokio::spawn(projector.run(std::future::pending()));
    wait_until(DEADLINE, "the event applied", || async { status.get().partitions.first().and_then(|p| p.position) == Some(1) }).await;
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("admin");
    admin.delete_topics(&[orders.name()], &rdkafka::admin::AdminOptions::new()).await.expect("delete request");
    let ended = tokio::time::timeout(DEADLINE, running).await.expect("run returns instead of logging forever").expect("task");
    match ended {
        Err(ProjectorError::Consumer(herald_bus::ConsumerError::TopicDeleted(t))) => assert_eq!(t, orders.name()),
        other => panic!("expected TopicDeleted, got {other:?}"),
    }
}
