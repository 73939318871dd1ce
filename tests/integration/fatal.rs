//! Faults that must neither wedge a partition silently nor run forever: a dead letter that
//! can never be written, a deleted topic, a runtime the consumer cannot work on.

use std::time::Duration;

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::{dead_letter, ConsumerError, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{committed, kafka, topic, unique, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{consumer, publisher, Running, Seen, DEADLINE};

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_too_large_for_its_topic_parks_the_partition_and_says_why() {
    let config = kafka().await;
    let name = topic(&config, "parked", 1).await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    // The dead-letter topic takes records of at most 1 KiB; the poison record is 4 KiB.
    let dlq = TopicSpec::new(dead_letter::topic_for(&name)).partitions(1).config("max.message.bytes", "1024");
    create_topics(&config, &[dlq]).await.expect("dead-letter topic");
    let publisher = publisher(&config);
    publisher.publish(&orders, &OrderPlaced::example("before", "c", 1)).await.expect("published");
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("raw producer");
    let poison = vec![0xffu8; 4096];
    raw.send(FutureRecord::to(&name).key("poison").payload(&poison), Duration::from_secs(10)).await.expect("raw send");
    publisher.publish(&orders, &OrderPlaced::example("after", "c", 2)).await.expect("published");

    let seen = Seen::default();
    let group = unique("g");
    let running = Running::start(consumer(&config, &group).subscribe(&orders, seen.handler())).await;
    let health = running.health.clone();
    wait_until(DEADLINE, "the partition is parked", || async { !health.parked().is_empty() }).await;
    let parked = health.parked();
    assert_eq!((parked[0].0.as_str(), parked[0].1), (name.as_str(), 0));
    assert!(parked[0].2.contains("offset 1") && parked[0].2.contains("MessageSizeTooLarge"), "the reason says what and why: {}", parked[0].2);
    assert!(!health.is_healthy(), "a parked partition makes the consumer unhealthy");
    // It stays parked: nothing after the poison record is handled, nothing is skipped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(seen.len(), 1, "only the record before the poison one");
    // The parked worker finishes nothing more: a shutdown stops it at once instead of
    // waiting the drain timeout (30 s) for it.
    let stopping = std::time::Instant::now();
    running.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(20), "shutdown took {:?}", stopping.elapsed());
    assert_eq!(committed(&config, &group, &name, 1).await, vec![Some(1)], "the group resumes at the poison record");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_topic_being_read_ends_run_with_an_error() {
    let config = kafka().await;
    let name = topic(&config, "deleted", 1).await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    publisher(&config).publish(&orders, &OrderPlaced::example("o1", "c", 1)).await.expect("published");
    let seen = Seen::default();
    // librdkafka reports a topic gone from the metadata only after
    // topic.metadata.propagation.max.ms (30 s by default, against this test's 60 s
    // deadline: it failed once so on a busy machine); 5 s here.
    let reading = config.clone().set("topic.metadata.propagation.max.ms", "5000");
    let running = Running::start(consumer(&reading, &unique("g")).subscribe(&orders, seen.handler()).create_dead_letter_topics(false)).await;
    wait_until(DEADLINE, "the event handled", || async { seen.len() == 1 }).await;

    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("admin");
    let deleted = admin.delete_topics(&[&name], &AdminOptions::new()).await.expect("delete request");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");

    let ended = tokio::time::timeout(DEADLINE, running.task).await.expect("run returns instead of logging forever").expect("task");
    match ended {
        Err(ConsumerError::TopicDeleted(t)) => assert_eq!(t, name),
        other => panic!("expected TopicDeleted, got {other:?}"),
    }
    assert!(!running.health.is_healthy());
}

#[tokio::test]
async fn a_current_thread_runtime_is_refused_with_a_clear_error() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(unique("never.created"));
    let built = consumer(&config, &unique("g")).subscribe(&orders, Seen::default().handler()).build().await;
    match built {
        Err(e @ ConsumerError::CurrentThreadRuntime) => assert!(e.to_string().contains("multi-threaded runtime"), "{e}"),
        Err(other) => panic!("expected CurrentThreadRuntime, got {other}"),
        Ok(_) => panic!("a consumer on a current-thread runtime stalls every rebalance: it must be refused"),
    }
}
