//! Failing handlers and poison records end up in the dead-letter topic; the consumer goes on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use herald_bus::dead_letter::{self, DeadLetter};
use herald_bus::schema::{Fingerprint, SchemaSet};
use herald_bus::{Envelope, HandlerError, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use herald_testkit::{kafka, read_all, record_count, topic, unique, wait_until};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{consumer, order_id, publisher, Running, Seen, DEADLINE};

#[tokio::test(flavor = "multi_thread")]
async fn failing_handlers_are_retried_then_dead_lettered() {
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "dlq", 2).await);
    let publisher = publisher(&config);
    let ids = ["good-1", "always-fails", "rejected", "flaky", "good-2"];
    for id in ids {
        publisher.publish(&orders, &OrderPlaced::example(id, "c", 1)).await.expect("published");
    }

    let seen = Seen::default();
    let attempts: Arc<std::sync::Mutex<HashMap<String, u32>>> = Default::default();
    let handler = {
        let (seen, attempts) = (seen.clone(), attempts.clone());
        move |e: Envelope<OrderEvent>| {
            let (seen, attempts) = (seen.clone(), attempts.clone());
            async move {
                let id = order_id(&e.event).to_owned();
                let n = {
                    let mut a = attempts.lock().unwrap();
                    let n = a.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                match id.as_str() {
                    "always-fails" => Err(HandlerError::msg("database unavailable")),
                    "rejected" => Err(HandlerError::permanent_msg("order violates a business rule")),
                    "flaky" if n < 3 => Err(HandlerError::msg("timeout")),
                    _ => {
                        seen.0.lock().unwrap().push(e);
                        Ok(())
                    }
                }
            }
        }
    };
    let group = unique("g");
    let running = Running::start(consumer(&config, &group).subscribe(&orders, handler)).await;
    let dlq = dead_letter::topic_for(orders.name());
    let letters = read_all(&config, &dlq, 2, DEADLINE).await;
    wait_until(DEADLINE, "good and flaky events handled", || async { seen.len() >= 3 }).await;
    running.shutdown().await;

    let mut handled: Vec<String> = seen.all().iter().map(|e| order_id(&e.event).to_owned()).collect();
    handled.sort();
    assert_eq!(handled, vec!["flaky", "good-1", "good-2"]);
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts["always-fails"], 3, "transient failures use every attempt");
    assert_eq!(attempts["rejected"], 1, "permanent failures are not retried");
    assert_eq!(attempts["flaky"], 3);

    let letters: HashMap<String, DeadLetter> = letters
        .iter()
        .map(|m| {
            let dl = DeadLetter::parse(m).expect("dead letter headers");
            (String::from_utf8(dl.key.clone().unwrap()).unwrap(), dl)
        })
        .collect();
    assert_eq!(letters.len(), 2);
    let failed = &letters["always-fails"];
    assert_eq!((failed.stage.as_str(), failed.attempts, failed.group.as_str()), ("handler", 3, group.as_str()));
    assert_eq!(failed.reason, "database unavailable");
    assert_eq!(failed.topic, orders.name());
    let rejected = &letters["rejected"];
    assert_eq!((rejected.stage.as_str(), rejected.attempts), ("handler", 1));
    assert!(rejected.reason.contains("business rule"));
    // The original record is kept byte for byte, with its CloudEvents headers.
    let originals = read_all(&config, orders.name(), 5, DEADLINE).await;
    let original = originals
        .iter()
        .find(|m| rdkafka::Message::key(*m) == Some(&b"rejected"[..]))
        .expect("original");
    assert_eq!(rejected.payload.as_deref(), rdkafka::Message::payload(original));
    assert_eq!(rejected.offset, rdkafka::Message::offset(original));
    assert!(rejected.headers.iter().any(|(k, _)| k == b"ce_id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_are_dead_lettered_and_later_events_still_handled() {
    let config = kafka().await;
    let name = topic(&config, "poison", 1).await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    let publisher = publisher(&config);

    // A valid OrderPlaced payload to corrupt.
    let good = publisher.encode(&orders, &OrderPlaced::example("x", "c", 5), &herald_bus::Metadata::new("shop.orders.OrderPlaced", "s", "x")).await.expect("encode");
    let good = good.payload.expect("a value");
    let mut unknown_fp = good.clone();
    unknown_fp[2..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let truncated = good[..good.len() - 3].to_vec();
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    // A well-formed event of a type that is not in the OrderEvent family.
    let other_schema = r#"{"type":"record","name":"Refunded","namespace":"shop.payments","fields":[{"name":"id","type":"string"}]}"#;
    let mut extra = SchemaSet::default();
    let other = extra.add_str(other_schema).expect("schema");
    let mut other_type = vec![0xC3, 0x01];
    other_type.extend_from_slice(&other.fingerprint.0);
    other_type.extend_from_slice(&[0x04, b'r', b'1']);
    assert_ne!(other.fingerprint, Fingerprint([0; 8]));

    let poison: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("garbage", Some(b"\xff\xfe not avro at all".to_vec()), "decode"),
        ("json", Some(br#"{"order_id":"o"}"#.to_vec()), "decode"),
        ("tombstone", None, "decode"),
        ("unknown-fingerprint", Some(unknown_fp), "decode"),
        ("truncated", Some(truncated), "decode"),
        ("trailing", Some(trailing), "decode"),
        ("other-type", Some(other_type), "unknown-type"),
    ];
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("raw producer");
    for (key, payload, _) in &poison {
        let headers = OwnedHeaders::new().insert(Header { key: "ce_id", value: Some("not-even-a-uuid") });
        let mut record = FutureRecord::to(&name).key(*key).headers(headers);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        raw.send(record, std::time::Duration::from_secs(10)).await.expect("raw send");
    }
    for i in 0..3 {
        publisher.publish(&orders, &OrderPlaced::example(&format!("after-{i}"), "c", i)).await.expect("good event");
    }

    let seen = Seen::default();
    let running = Running::start(consumer(&config, &unique("g")).schemas(extra).subscribe(&orders, seen.handler())).await;
    wait_until(DEADLINE, "good events after the poison handled", || async { seen.len() >= 3 }).await;
    let letters = read_all(&config, &dead_letter::topic_for(&name), poison.len(), DEADLINE).await;
    assert!(running.health.is_healthy(), "the consumer keeps running");
    running.shutdown().await;

    let by_key: HashMap<String, DeadLetter> = letters
        .iter()
        .map(|m| {
            let dl = DeadLetter::parse(m).expect("dead letter");
            (String::from_utf8(dl.key.clone().unwrap_or_default()).unwrap(), dl)
        })
        .collect();
    for (key, payload, stage) in &poison {
        let dl = by_key.get(*key).unwrap_or_else(|| panic!("{key} was not dead-lettered; got {:?}", by_key.keys()));
        assert_eq!(dl.stage, *stage, "{key}: {}", dl.reason);
        assert!(!dl.reason.is_empty());
        // None stays None: a tombstone is dead-lettered as a tombstone, not as empty bytes.
        assert_eq!(dl.payload, *payload, "{key}: original bytes kept");
    }
    assert!(by_key["unknown-fingerprint"].reason.contains("0102030405060708"), "{}", by_key["unknown-fingerprint"].reason);
    assert!(by_key["truncated"].reason.contains("truncated"), "{}", by_key["truncated"].reason);
    assert!(by_key["other-type"].reason.contains("shop.payments.Refunded"));
    let handled: Vec<String> = seen.all().iter().map(|e| order_id(&e.event).to_owned()).collect();
    assert_eq!(handled, vec!["after-0", "after-1", "after-2"]);
}

/// A record at Kafka's default size limit (1,048,588 bytes a batch, which the broker
/// takes) that does not decode is dead-lettered like any other. Before, Herald's producer
/// kept librdkafka's own 1,000,000, and then the dead-letter topic had the same limit as
/// the record's, so the letter's `herald.dlq.*` headers made it too large: it could not be
/// written and the partition parked.
#[tokio::test(flavor = "multi_thread")]
async fn a_poison_record_near_kafkas_size_limit_is_dead_lettered() {
    let config = kafka().await;
    // The broker decides what it takes; the batch's and the record's framing take about 80 bytes.
    a_large_poison_record_is_dead_lettered(&config, topic(&config, "dlq.large", 1).await, 1_048_588 - 128).await;
}

/// A topic whose limit was raised above the producers' (`max.message.bytes` 3 MB): a 2 MB
/// poison record is dead-lettered (its `.dlq` is made 64 KiB larger than the topic, and
/// the dead-letter producer leaves the size to it). Before, that producer kept a client
/// limit of about 1.1 MB: the letter was refused and the partition parked.
#[tokio::test(flavor = "multi_thread")]
async fn a_poison_record_on_a_topic_with_a_raised_limit_is_dead_lettered() {
    let config = kafka().await;
    let name = unique("dlq.raised");
    herald_bus::admin::create_topics(&config, &[herald_bus::admin::TopicSpec::new(&name).partitions(1).config("max.message.bytes", "3145728")]).await.expect("topic");
    a_large_poison_record_is_dead_lettered(&config, name, 2_000_000).await;
}

/// Writes an undecodable record of `size` bytes to `name` (which the broker must take),
/// then an event: the record is dead-lettered whole, the event handled, nothing parked.
async fn a_large_poison_record_is_dead_lettered(config: &herald_bus::KafkaConfig, name: String, size: usize) {
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).set("message.max.bytes", "4000000").create().expect("raw producer");
    let poison = vec![0xffu8; size];
    raw.send(FutureRecord::to(&name).key("poison").payload(&poison), std::time::Duration::from_secs(30)).await.expect("the broker takes it");
    publisher(config).publish(&orders, &OrderPlaced::example("after", "c", 1)).await.expect("published");
    let seen = Seen::default();
    let running = Running::start(consumer(config, &unique("g")).subscribe(&orders, seen.handler())).await;
    let letters = read_all(config, &dead_letter::topic_for(&name), 1, DEADLINE).await;
    wait_until(DEADLINE, "the record after it handled", || async { seen.len() == 1 }).await;
    assert!(running.health.parked().is_empty(), "nothing parked: {:?}", running.health.parked());
    running.shutdown().await;
    let letter = DeadLetter::parse(&letters[0]).expect("dead letter headers");
    assert_eq!((letter.stage.as_str(), letter.key.as_deref(), letter.payload.as_deref().map(<[u8]>::len)), ("decode", Some(b"poison".as_slice()), Some(poison.len())));
}

#[tokio::test(flavor = "multi_thread")]
async fn null_keys_and_tombstones_are_dead_lettered_as_nulls() {
    let config = kafka().await;
    let name = topic(&config, "nulls", 3).await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    // (key, value): a keyless tombstone, a keyless undecodable value, a keyed tombstone,
    // and an empty key and value (which must stay empty, not become null).
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
    let poison: Vec<KeyValue<'_>> = vec![(None, None), (None, Some(b"not avro")), (Some(b"cart-1"), None), (Some(b""), Some(b""))];
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("raw producer");
    for (i, (key, value)) in poison.iter().enumerate() {
        let headers = OwnedHeaders::new().insert(Header { key: "n", value: Some(&i.to_string()) });
        let record = FutureRecord { key: *key, payload: *value, ..FutureRecord::<[u8], [u8]>::to(&name) }.headers(headers);
        raw.send(record, std::time::Duration::from_secs(10)).await.expect("raw send");
    }
    publisher(&config).publish(&orders, &OrderPlaced::example("after", "c", 1)).await.expect("good event");

    let seen = Seen::default();
    let running = Running::start(consumer(&config, &unique("g")).subscribe(&orders, seen.handler())).await;
    wait_until(DEADLINE, "the good event handled", || async { seen.len() >= 1 }).await;
    // Read back with a plain rdkafka consumer: what any other tool would see.
    let letters = read_all(&config, &dead_letter::topic_for(&name), poison.len(), DEADLINE).await;
    running.shutdown().await;
    assert_eq!(letters.len(), poison.len());
    for letter in &letters {
        use rdkafka::message::{Headers as _, Message as _};
        let n: usize = letter.headers().and_then(|h| h.iter().find(|h| h.key == "n")).and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok()).expect("header n");
        let (key, value) = poison[n];
        assert_eq!((letter.key(), letter.payload()), (key, value), "record {n}: nulls stay null, empty stays empty");
        let dl = DeadLetter::parse(letter).expect("dead letter");
        assert_eq!((dl.key.as_deref(), dl.payload.as_deref()), (key, value), "record {n} parsed");
        let replay = dl.replay_record();
        assert_eq!((replay.key.as_deref(), replay.payload.as_deref()), (key, value), "record {n} replayed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_types_can_be_skipped_by_policy() {
    let config = kafka().await;
    let name = topic(&config, "skip", 1).await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    let mut extra = SchemaSet::default();
    let other = extra
        .add_str(r#"{"type":"record","name":"Audit","namespace":"ops","fields":[{"name":"id","type":"string"}]}"#)
        .expect("schema");
    let mut payload = vec![0xC3, 0x01];
    payload.extend_from_slice(&other.fingerprint.0);
    payload.extend_from_slice(&[0x02, b'a']);
    let raw: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("raw producer");
    raw.send(FutureRecord::to(&name).key("a").payload(&payload), std::time::Duration::from_secs(10)).await.expect("send");
    // A type whose schema this consumer does not even hold (a reader that does not care
    // about a type has no reason to): its `ce_type` says it is not in the family.
    let frozen = SchemaSet::default().add_str(r#"{"type":"record","name":"Frozen","namespace":"ops","fields":[{"name":"id","type":"string"}]}"#).expect("schema");
    let mut payload = vec![0xC3, 0x01];
    payload.extend_from_slice(&frozen.fingerprint.0);
    payload.extend_from_slice(&[0x02, b'f']);
    let headers = OwnedHeaders::new().insert(Header { key: "ce_type", value: Some("ops.Frozen") });
    raw.send(FutureRecord::to(&name).key("f").payload(&payload).headers(headers), std::time::Duration::from_secs(10)).await.expect("send");
    publisher(&config).publish(&orders, &OrderPlaced::example("after", "c", 1)).await.expect("good");

    let seen = Seen::default();
    let calls = Arc::new(AtomicU32::new(0));
    let handler = {
        let (seen, calls) = (seen.clone(), calls.clone());
        move |e: Envelope<OrderEvent>| {
            calls.fetch_add(1, Ordering::SeqCst);
            seen.0.lock().unwrap().push(e);
            async { Ok(()) }
        }
    };
    let running = Running::start(
        consumer(&config, &unique("g")).schemas(extra).unknown_types(herald_bus::UnknownTypes::Skip).subscribe(&orders, handler),
    )
    .await;
    wait_until(DEADLINE, "the good event handled", || async { seen.len() >= 1 }).await;
    running.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the unknown types never reached the handler");
    // The skipped record was processed before the good one, so any dead letter for it
    // would already be acknowledged: the dead-letter topic must be empty.
    assert_eq!(record_count(&config, &dead_letter::topic_for(&name)).await, 0, "skipped records are not dead-lettered");
}

/// A codec whose writer-schema lookup fails transiently a few times (a registry outage).
#[derive(Debug)]
struct Flaky {
    inner: herald_bus::codec::SingleObject,
    failures_left: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl herald_bus::codec::Codec for Flaky {
    async fn write_header(&self, topic: &str, schema: &herald_bus::schema::KnownSchema, out: &mut Vec<u8>) -> Result<(), herald_bus::PublishError> {
        self.inner.write_header(topic, schema, out).await
    }

    async fn read_header<'a>(
        &self,
        payload: &'a [u8],
    ) -> Result<(Arc<herald_bus::schema::KnownSchema>, &'a [u8]), herald_bus::codec::DecodeError> {
        if self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(herald_bus::codec::DecodeError::Unavailable("registry answered 503".into()));
        }
        self.inner.read_header(payload).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unavailable_schema_source_is_waited_for_not_dead_lettered() {
    let config = kafka().await;
    let name = topic(&config, "unavailable", 1).await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    publisher(&config).publish(&orders, &OrderPlaced::example("o-1", "c", 1)).await.expect("published");

    let seen = Seen::default();
    let failures_left = Arc::new(AtomicU32::new(3));
    let failures = failures_left.clone();
    let running = Running::start(
        consumer(&config, &unique("g"))
            .codec(move |schemas| Arc::new(Flaky { inner: herald_bus::codec::SingleObject::new(schemas), failures_left: failures.clone() }))
            .subscribe(&orders, seen.handler()),
    )
    .await;
    wait_until(DEADLINE, "the event handled once the schema is available", || async { seen.len() >= 1 }).await;
    running.shutdown().await;
    assert_eq!(failures_left.load(Ordering::SeqCst), 0, "the lookup failed three times first");
    assert_eq!(seen.len(), 1);
    assert_eq!(record_count(&config, &dead_letter::topic_for(&name)).await, 0, "nothing dead-lettered");
}

/// A record whose `ce_type` names another event than its payload (an `OrderPlaced` said to
/// be an `OrderCancelled`) is dead-lettered, saying both: read by the payload it would be
/// one event, by the header another (a view and a saga tracker disagreed). The record
/// after it is handled.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_whose_ce_type_contradicts_its_payload_is_dead_lettered() {
    let config = kafka().await;
    let name = topic(&config, "dlq.type", 1).await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    let publisher = publisher(&config);
    let placed = OrderPlaced::example("o-1", "c", 1);
    // Herald's publisher refuses to write one.
    let said = herald_bus::Metadata::new("shop.orders.OrderCancelled", "/test", "o-1");
    let refused = publisher.publish_with(&orders, &placed, said).await;
    assert!(matches!(&refused, Err(herald_bus::PublishError::Encode { .. })), "{refused:?}");
    let letter = dead_letter_of_an_order_with(&config, &name, &[(b"ce_id", b"0190b2a0-0000-7000-8000-000000000001"), (b"ce_type", b"shop.orders.OrderCancelled"), (b"ce_source", b"/elsewhere")]).await;
    assert!(letter.reason.contains("shop.orders.OrderCancelled") && letter.reason.contains("shop.orders.OrderPlaced"), "{}", letter.reason);
}

/// A `ce_id` that is not UTF-8 text is malformed, not absent: the record is dead-lettered
/// saying so, and the one after it is handled. (Before, it was taken as absent: handled
/// with an id made from its position, and `herald tail` showed the nil id.)
#[tokio::test(flavor = "multi_thread")]
async fn a_record_whose_ce_id_is_not_text_is_dead_lettered() {
    let config = kafka().await;
    let name = topic(&config, "dlq.id", 1).await;
    let letter = dead_letter_of_an_order_with(&config, &name, &[(b"ce_id", b"\xff\xfe"), (b"ce_type", b"shop.orders.OrderPlaced"), (b"ce_source", b"/elsewhere")]).await;
    assert!(letter.reason.contains("ce_id header is not UTF-8 text") && letter.reason.contains("fffe"), "{}", letter.reason);
}

/// Sends an `OrderPlaced` for o-1 to `name` with these headers (as bytes), then a plain
/// one for o-2; runs a consumer until o-2 is handled, checks that o-1 was not and was
/// dead-lettered at stage `decode`, and returns its dead letter.
async fn dead_letter_of_an_order_with(config: &herald_bus::KafkaConfig, name: &str, headers: &[(&[u8], &[u8])]) -> DeadLetter {
    let orders: Topic<OrderEvent> = Topic::named(name);
    let publisher = publisher(config);
    let placed = OrderPlaced::example("o-1", "c", 1);
    let encoded = publisher.encode(&orders, &placed, &publisher.metadata_for(&placed)).await.expect("encode");
    let value = encoded.payload.as_deref().expect("a value");
    send_with_byte_names(config, name, b"o-1", value, headers);
    publisher.publish(&orders, &OrderPlaced::example("o-2", "c", 2)).await.expect("published");
    let seen = Seen::default();
    let running = Running::start(consumer(config, &unique("g")).subscribe(&orders, seen.handler())).await;
    let letters = read_all(config, &dead_letter::topic_for(name), 1, DEADLINE).await;
    wait_until(DEADLINE, "the record after it handled", || async { seen.len() == 1 }).await;
    running.shutdown().await;
    assert_eq!(seen.all().iter().map(|e| order_id(&e.event).to_owned()).collect::<Vec<_>>(), ["o-2"]);
    let letter = DeadLetter::parse(&letters[0]).expect("dead letter headers");
    assert_eq!(letter.stage, "decode");
    letter
}

/// Sends one record through librdkafka's C API with header names given as bytes (rdkafka's
/// Rust API takes names as `&str` only): what a client in another language can write.
#[allow(unsafe_code)]
fn send_with_byte_names(config: &herald_bus::KafkaConfig, topic: &str, key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])]) {
    use rdkafka::bindings as rd;
    use rdkafka::producer::{BaseProducer, Producer};
    use std::ffi::CString;
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", config.bootstrap()).create().expect("raw producer");
    let topic = CString::new(topic).expect("topic name");
    let names: Vec<CString> = headers.iter().map(|(n, _)| CString::new(*n).expect("no NUL in a name")).collect();
    let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
    let mem = |bytes: &[u8]| rd::rd_kafka_vu_s__bindgen_ty_1 { mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 { ptr: bytes.as_ptr() as *mut _, size: bytes.len() } };
    let mut vus = vec![
        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_TOPIC, rd::rd_kafka_vu_s__bindgen_ty_1 { cstr: topic.as_ptr() }),
        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY, mem(key)),
        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE, mem(value)),
        vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS, rd::rd_kafka_vu_s__bindgen_ty_1 { i: rd::RD_KAFKA_MSG_F_COPY }),
    ];
    for (name, (_, value)) in names.iter().zip(headers) {
        let header = rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 { name: name.as_ptr(), val: value.as_ptr() as *const _, size: value.len() as isize };
        vus.push(vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADER, rd::rd_kafka_vu_s__bindgen_ty_1 { header }));
    }
    // SAFETY: every pointer in `vus` outlives the call, and RD_KAFKA_MSG_F_COPY makes
    // librdkafka copy key and value; header names and values are always copied.
    let error = unsafe { rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), vus.len()) };
    assert!(error.is_null(), "rd_kafka_produceva refused the record");
    producer.flush(std::time::Duration::from_secs(30)).expect("record delivered");
}

/// Kafka's header names are bytes on the wire: Java reads them as UTF-8 with replacement,
/// librdkafka keeps them as they are, and rdkafka's Rust accessor panics on a name that is
/// not UTF-8. A record carrying one must be handled or dead-lettered like any other,
/// its headers kept byte for byte, and the consumer must keep running.
#[tokio::test(flavor = "multi_thread")]
async fn header_names_that_are_not_utf8_are_read_and_kept_as_bytes() {
    use rdkafka::message::Message as _;
    let config = kafka().await;
    let name = topic(&config, "byte-names", 1).await;
    let orders: Topic<OrderEvent> = Topic::named(name.clone());
    let publisher = publisher(&config);
    let meta = herald_bus::Metadata::new("shop.orders.OrderPlaced", "/tests", "bytes-1");
    let event = publisher.encode(&orders, &OrderPlaced::example("bytes-1", "c", 5), &meta).await.expect("encode");
    let payload = event.payload.clone().expect("a value");
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = herald_bus::headers::pairs(&event.headers).map(|(n, v)| (n.to_vec(), v.unwrap_or_default().to_vec())).collect();
    let odd: (&[u8], &[u8]) = (b"x-latin1-\xe9t\xe9", b"\xff\x00value");
    headers.push((odd.0.to_vec(), odd.1.to_vec()));
    let headers: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
    // An event that decodes, then a value that does not, both with the odd header.
    send_with_byte_names(&config, &name, b"bytes-1", &payload, &headers);
    send_with_byte_names(&config, &name, b"bytes-2", b"not avro", &[odd]);
    publisher.publish(&orders, &OrderPlaced::example("after", "c", 1)).await.expect("good event");

    let seen = Seen::default();
    let running = Running::start(consumer(&config, &unique("g")).subscribe(&orders, seen.handler())).await;
    wait_until(DEADLINE, "both events handled", || async { seen.len() >= 2 }).await;
    let letters = read_all(&config, &dead_letter::topic_for(&name), 1, DEADLINE).await;
    assert!(running.health.is_healthy(), "the consumer keeps running");
    running.shutdown().await;

    let handled: Vec<String> = seen.all().iter().map(|e| order_id(&e.event).to_owned()).collect();
    assert_eq!(handled, ["bytes-1", "after"]);
    assert_eq!(seen.all()[0].meta.id, meta.id, "the CloudEvents headers beside the odd one are read");
    assert_eq!(letters.len(), 1, "the undecodable record is dead-lettered");
    let letter = &letters[0];
    assert_eq!((letter.key(), letter.payload()), (Some(&b"bytes-2"[..]), Some(&b"not avro"[..])));
    let kept: Vec<(&[u8], Option<&[u8]>)> = letter.headers().map(|h| herald_bus::headers::pairs(h).filter(|(n, _)| !n.starts_with(b"herald.")).collect()).unwrap_or_default();
    assert_eq!(kept, [(odd.0, Some(odd.1))], "the header is dead-lettered byte for byte");
    let dl = DeadLetter::parse(letter).expect("dead letter");
    assert_eq!(dl.headers, [(odd.0.to_vec(), Some(odd.1.to_vec()))]);
    let replay = dl.replay_record();
    assert_eq!(herald_bus::headers::pairs(&replay.headers).collect::<Vec<_>>(), [(odd.0, Some(odd.1))], "replayed byte for byte");
}
