//! Several event types go out and come back with all their metadata.

use herald_bus::envelope::{header, AVRO_CONTENT_TYPE};
use herald_bus::partitioner::partition_for;
use herald_bus::trace::TraceContext;
use herald_bus::{Metadata, Topic};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderEvent, OrderPlaced};
use herald_testkit::{kafka, topic, unique, wait_until};
use rdkafka::message::{Headers, Message};

use crate::support::{consumer, publisher, Running, Seen, DEADLINE};

#[tokio::test(flavor = "multi_thread")]
async fn events_round_trip_with_cloudevents_headers() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "rt", 3).await);
    let publisher = publisher(&config);

    let placed = OrderPlaced { note: Some("leave at the door".into()), ..OrderPlaced::example("o-1", "c-1", 4200) };
    let first = publisher.publish(&orders, &placed).await.expect("placed");
    // Published from inside a trace: the event carries a child of it.
    let trace = TraceContext::new_root();
    let confirmed = OrderConfirmed::example("o-1", "p-1");
    let second = trace.scope(publisher.publish(&orders, &confirmed)).await.expect("confirmed");
    // Caused by the first event: same correlation id, causation = first id.
    let cause = Metadata { id: first.id, correlation_id: Some(first.id.to_string()), ..Metadata::new("x", "y", "o-1") };
    let cancelled = OrderCancelled::example("o-1", "changed mind", None);
    let meta = publisher.metadata_for(&cancelled).caused_by(&cause);
    let third = publisher.publish_with(&orders, &cancelled, meta).await.expect("cancelled");
    assert_eq!((first.partition, second.partition, third.partition), (first.partition, first.partition, first.partition), "one aggregate, one partition");
    assert!(first.offset < second.offset && second.offset < third.offset);

    let seen = Seen::default();
    let running = Running::start(consumer(&config, &unique("g")).subscribe(&orders, seen.handler())).await;
    wait_until(DEADLINE, "three events handled", || async { seen.len() >= 3 }).await;
    running.shutdown().await;

    let events = seen.all();
    assert_eq!(events.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), vec![
        OrderEvent::Placed(placed),
        OrderEvent::Confirmed(confirmed),
        OrderEvent::Cancelled(cancelled)
    ]);
    let ids: Vec<_> = events.iter().map(|e| e.meta.id).collect();
    assert_eq!(ids, vec![first.id, second.id, third.id]);
    for e in &events {
        assert_eq!(e.meta.source, "/herald/tests");
        assert_eq!(e.meta.subject, "o-1");
        assert_eq!(e.position.topic, orders.name());
        assert_eq!(e.meta.id.get_version_num(), 7, "ce_id is a UUIDv7");
        assert!((chrono::Utc::now() - e.meta.time).num_seconds().abs() < 120, "ce_time is now-ish");
    }
    assert_eq!(events[0].meta.event_type, "shop.orders.OrderPlaced");
    assert_eq!(events[1].meta.event_type, "shop.orders.OrderConfirmed");
    assert_eq!(events[2].meta.event_type, "shop.orders.OrderCancelled");
    assert_eq!(events[0].meta.trace, None);
    let child = events[1].meta.trace.expect("traceparent");
    assert_eq!(child.trace_id, trace.trace_id);
    assert_ne!(child.span_id, trace.span_id);
    assert_eq!(events[2].meta.causation_id, Some(first.id.to_string()));
    assert_eq!(events[2].meta.correlation_id, Some(first.id.to_string()));

    // The raw record: plain UTF-8 key, single-object payload, binary-mode CloudEvents headers.
    let raw = herald_testkit::read_all(&config, orders.name(), 1, DEADLINE).await;
    let record = &raw[0];
    assert_eq!(record.key(), Some(&b"o-1"[..]));
    let payload = record.payload().expect("payload");
    assert_eq!(&payload[..2], &[0xC3, 0x01]);
    let headers = record.headers().expect("headers");
    let get = |name: &str| headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(get(header::SPECVERSION).as_deref(), Some("1.0"));
    assert_eq!(get(header::CONTENT_TYPE).as_deref(), Some(AVRO_CONTENT_TYPE));
    assert_eq!(get(header::ID), Some(first.id.to_string()));
    assert_eq!(get(header::TYPE).as_deref(), Some("shop.orders.OrderPlaced"));
    assert!(get(header::TIME).expect("ce_time").ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_land_where_the_java_client_puts_them() {
    let config = kafka().await;
    let partitions = 6;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "murmur", partitions).await);
    let publisher = publisher(&config);
    let events: Vec<OrderPlaced> = (0..60).map(|i| OrderPlaced::example(&format!("order-{i}"), "c", i)).collect();
    let results = publisher.publish_all(&orders, &events).await;
    let mut used = std::collections::HashSet::new();
    for (event, result) in events.iter().zip(results) {
        let published = result.expect("published");
        let expected = partition_for(event.order_id.as_bytes(), partitions as u32) as i32;
        assert_eq!(published.partition, expected, "key {}", event.order_id);
        used.insert(published.partition);
    }
    assert!(used.len() > 1, "keys spread over partitions");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_events_are_refused_before_sending() {
    let config = kafka().await.set("message.max.bytes", "10000");
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "big", 1).await);
    let publisher = publisher(&config);
    let big = OrderPlaced { note: Some("x".repeat(20_000)), ..OrderPlaced::example("o-big", "c", 1) };
    match publisher.publish(&orders, &big).await {
        Err(herald_bus::PublishError::Oversize { size, limit }) => assert!(size > limit && limit == 10_000),
        other => panic!("expected Oversize, got {other:?}"),
    }
    // Nothing reached the topic; a normal event still goes through.
    let ok = publisher.publish(&orders, &OrderPlaced::example("o-small", "c", 1)).await.expect("small event");
    assert_eq!(ok.offset, 0);
}

/// `publish_all` answers one result per event in input order, a refused event's error in
/// its place among the others' acknowledgements, across more sends than the in-flight
/// bound.
#[tokio::test(flavor = "multi_thread")]
async fn publish_all_answers_in_input_order_with_a_refused_event_in_its_place() {
    let config = kafka().await.set("message.max.bytes", "10000");
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "all.order", 3).await);
    let options = herald_bus::PublisherOptions { max_in_flight: 50, ..herald_bus::PublisherOptions::new("/herald/tests") };
    let publisher = herald_bus::Publisher::new(&config, options).expect("publisher");
    let mut events: Vec<OrderPlaced> = (0..200).map(|i| OrderPlaced::example(&format!("o-{}", i % 9), "c", i)).collect();
    events[120].note = Some("x".repeat(20_000));
    let results = tokio::time::timeout(DEADLINE, publisher.publish_all(&orders, &events)).await.expect("publish_all finishes");
    assert_eq!(results.len(), events.len());
    // Event 120 (aggregate o-3) is refused; the later events of o-3 are not sent, so
    // republishing from 120 on keeps o-3 in order; every other event is sent.
    let mut held_back = 0;
    for (i, result) in results.iter().enumerate() {
        let later_of_the_same = i > 120 && events[i].order_id == events[120].order_id;
        match (i, result) {
            (120, Err(herald_bus::PublishError::Oversize { .. })) => {}
            (120, other) => panic!("event 120 is oversize, got {other:?}"),
            (_, Err(herald_bus::PublishError::EarlierFailed { aggregate_id })) if later_of_the_same => {
                assert_eq!(aggregate_id, &events[120].order_id);
                held_back += 1;
            }
            (_, Err(e)) => panic!("event {i}: {e}"),
            (_, Ok(_)) => assert!(!later_of_the_same, "event {i} of {} sent after 120 failed", events[i].order_id),
        }
    }
    assert_eq!(held_back, (121..200).filter(|i| i % 9 == 120 % 9).count());
    // Per key, offsets rise in input order: each result belongs to its own event.
    let mut last: std::collections::HashMap<(i32, &str), i64> = std::collections::HashMap::new();
    for (event, result) in events.iter().zip(&results) {
        if let Ok(published) = result {
            let before = last.insert((published.partition, event.order_id.as_str()), published.offset);
            assert!(before.is_none_or(|b| b < published.offset), "{}: offsets in input order", event.order_id);
        }
    }
    assert_eq!(herald_testkit::record_count(&config, orders.name()).await, 199 - held_back as i64);
}

/// A record sent `to_partition` lands there, whatever partition its key hashes to.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_for_a_partition_lands_there_not_where_its_key_hashes() {
    let config = kafka().await;
    let name = topic(&config, "to.partition", 3).await;
    let publisher = herald_bus::Publisher::new(&config, herald_bus::PublisherOptions::new("/herald/tests")).expect("publisher");
    let key = "k-1";
    let hashed = partition_for(key.as_bytes(), 3) as i32;
    let chosen = (hashed + 1) % 3;
    let record = herald_bus::publisher::Record::new(&name, key, b"v".to_vec(), Default::default()).to_partition(chosen);
    let (partition, offset) = tokio::time::timeout(DEADLINE, publisher.send_record(record)).await.expect("acknowledged in time").expect("sent");
    assert_eq!((partition, offset), (chosen, 0));
    let read = herald_testkit::read_all(&config, &name, 1, DEADLINE).await;
    assert_eq!((read[0].partition(), read[0].key()), (chosen, Some(key.as_bytes())));
}

#[tokio::test(flavor = "multi_thread")]
async fn queueing_more_than_the_in_flight_limit_never_deadlocks() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "inflight", 3).await);
    let options = herald_bus::PublisherOptions { max_in_flight: 100, ..herald_bus::PublisherOptions::new("/herald/tests") };
    let publisher = herald_bus::Publisher::new(&config, options).expect("publisher");
    let events: Vec<OrderPlaced> = (0..300).map(|i| OrderPlaced::example(&format!("o-{}", i % 7), "c", i)).collect();

    // A batch three times the limit.
    let batch = tokio::time::timeout(DEADLINE, publisher.publish_all(&orders, &events)).await.expect("publish_all finishes");
    assert!(batch.iter().all(Result::is_ok));

    // Queueing three times the limit before collecting any delivery: slots free up as the
    // broker acknowledges, not when the caller looks.
    let mut deliveries = Vec::new();
    for event in &events {
        let record = publisher.encode(&orders, event, &publisher.metadata_for(event)).await.expect("encode");
        let queued = tokio::time::timeout(DEADLINE, publisher.enqueue(record)).await.expect("a slot frees up without collecting");
        deliveries.push(queued.expect("queued"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }
    assert_eq!(herald_testkit::record_count(&config, orders.name()).await, 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_using_a_named_type_several_times_is_published_and_read_back() {
    use herald_testkit::parcels::{self, Parcels};
    let config = kafka().await;
    let shipped: Topic<Parcels> = Topic::named(topic(&config, "parcels", 1).await);
    let sent = parcels::examples("p");
    let publisher = publisher(&config);
    for parcel in &sent {
        publisher.publish(&shipped, parcel).await.expect("published (the encoder follows the references to Address)");
    }

    let seen: std::sync::Arc<std::sync::Mutex<Vec<Parcels>>> = Default::default();
    let handler = {
        let seen = seen.clone();
        move |e: herald_bus::Envelope<Parcels>| {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(e.event);
            futures::future::ready(Ok::<(), herald_bus::HandlerError>(()))
        }
    };
    let running = Running::start(consumer(&config, &unique("g")).subscribe(&shipped, handler)).await;
    wait_until(DEADLINE, "the events read back", || async { seen.lock().unwrap_or_else(|p| p.into_inner()).len() >= sent.len() }).await;
    running.shutdown().await;
    assert_eq!(*seen.lock().unwrap_or_else(|p| p.into_inner()), sent.into_iter().map(Parcels::Shipped).collect::<Vec<_>>());
}
