//! The registry client and the codecs against a fake registry that replays the documented
//! Confluent API (no broker needed): caching, 404 vs 503, subject strategies, the dual
//! codec's dispatch on the first byte.

mod support;

use std::sync::Arc;

use herald_bus::codec::{Codec, DecodeError};
use herald_bus::schema::SchemaSet;
use herald_bus::PublishError;
use herald_registry::{CodecConfig, Confluent, Dual, Format, Registry, RegistryConfig, RegistryError, SubjectStrategy};

use support::fake::FakeRegistry;
use support::{order_schemas, quick_backoff};

fn registry(fake: &FakeRegistry) -> Registry {
    Registry::new(RegistryConfig::new(&fake.url).backoff(quick_backoff())).expect("client")
}

fn placed() -> Arc<herald_bus::schema::KnownSchema> {
    order_schemas().latest("shop.orders.OrderPlaced").expect("OrderPlaced schema").clone()
}

#[tokio::test]
async fn publishing_registers_once_and_consuming_fetches_once() {
    let fake = FakeRegistry::start().await;
    let codec = Confluent::new(registry(&fake));
    let schema = placed();

    let mut first = Vec::new();
    codec.write_header("orders", &schema, &mut first).await.expect("framed");
    let mut second = Vec::new();
    codec.write_header("orders", &schema, &mut second).await.expect("framed");
    assert_eq!(first, [0, 0, 0, 0, 1], "magic byte and schema id 1");
    assert_eq!(first, second);
    assert_eq!(fake.requests(), 1, "the id is cached");

    // A fresh client (another process) reads the id back.
    let reader = Confluent::new(registry(&fake));
    first.push(0x42);
    for _ in 0..3 {
        let (writer, datum) = reader.read_header(&first).await.expect("decoded");
        assert_eq!(writer.name, "shop.orders.OrderPlaced");
        assert_eq!(writer.fingerprint, schema.fingerprint);
        assert_eq!(datum, &[0x42]);
    }
    assert_eq!(fake.requests(), 2, "the schema is cached");
}

#[tokio::test]
async fn subject_strategies_decide_the_subject() {
    let fake = FakeRegistry::start().await;
    let schema = placed();
    for strategy in [SubjectStrategy::RecordName, SubjectStrategy::TopicName, SubjectStrategy::TopicRecordName] {
        let codec = Confluent::new(registry(&fake)).subject_strategy(strategy);
        codec.write_header("orders", &schema, &mut Vec::new()).await.expect("registered");
        // Without auto-registration the same subject is found by lookup.
        let lookup = Confluent::new(registry(&fake)).subject_strategy(strategy).auto_register(false);
        assert_eq!(lookup.id_for("orders", &schema).await.expect("looked up"), 1);
    }
    let other_topic = Confluent::new(registry(&fake)).subject_strategy(SubjectStrategy::TopicName).auto_register(false);
    let err = other_topic.id_for("payments", &schema).await.expect_err("payments-value does not exist");
    assert!(matches!(err, RegistryError::NotFound { code: 40401, .. }), "{err:?}");
}

#[tokio::test]
async fn unregistered_schema_without_auto_register_is_not_retryable() {
    let fake = FakeRegistry::start().await;
    fake.insert("shop.orders.OrderPlaced", r#"{"type":"record","name":"OrderPlaced","namespace":"shop.orders","fields":[]}"#);
    let codec = Confluent::new(registry(&fake)).auto_register(false);
    let err = codec.write_header("orders", &placed(), &mut Vec::new()).await.expect_err("not registered");
    assert!(matches!(err, PublishError::UnknownSchema(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("40403"), "{err}");
}

#[tokio::test]
async fn unknown_schema_id_is_a_permanent_decode_error() {
    let fake = FakeRegistry::start().await;
    let codec = Confluent::new(registry(&fake));
    let err = codec.read_header(&[0, 0, 0, 0, 99, 2]).await.expect_err("unknown id");
    assert!(matches!(err, DecodeError::UnknownSchemaId(99)), "{err:?}");
    assert!(!err.is_transient(), "a 404 is permanent: the record is dead-lettered");
    assert!(err.to_string().contains("unknown schema id 99"), "{err}");
    assert_eq!(fake.requests(), 1, "404 is not retried");
}

#[tokio::test]
async fn registry_unavailable_on_consume_is_a_transient_decode_error() {
    let fake = FakeRegistry::start().await;
    fake.set_down(true);
    let codec = Confluent::new(registry(&fake));
    let err = codec.read_header(&[0, 0, 0, 0, 7, 2]).await.expect_err("registry down");
    assert!(matches!(err, DecodeError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient(), "the consumer waits instead of dead-lettering");
}

#[tokio::test]
async fn a_refused_credential_or_a_foreign_answer_on_consume_is_transient() {
    let fake = FakeRegistry::start().await;
    let id = fake.insert("shop.orders.OrderPlaced", &placed().json().expect("schema json"));
    let codec = Confluent::new(registry(&fake));
    let frame = [&[0u8][..], &id.to_be_bytes(), &[2]].concat();
    for status in [401, 403, 200] {
        fake.answer_all(Some(status));
        let err = codec.read_header(&frame).await.expect_err("registry refuses");
        assert!(matches!(err, DecodeError::Unavailable(_)), "{status}: {err:?}");
        assert!(err.is_transient(), "{status}: the consumer waits instead of dead-lettering");
    }
    // Once the credential works again, the same record decodes.
    fake.answer_all(None);
    let (writer, _) = codec.read_header(&frame).await.expect("registry answers again");
    assert_eq!(writer.name, "shop.orders.OrderPlaced");
}

#[tokio::test]
async fn registry_unavailable_is_retried_then_retryable_on_publish() {
    let fake = FakeRegistry::start().await;
    fake.set_down(true);
    let codec = Confluent::new(registry(&fake));
    let err = codec.write_header("orders", &placed(), &mut Vec::new()).await.expect_err("registry down");
    assert!(matches!(err, PublishError::Codec(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(fake.requests(), 3, "bounded: every attempt of the backoff, no more");

    // Failures are not cached: once the registry is back, publishing works.
    fake.set_down(false);
    codec.write_header("orders", &placed(), &mut Vec::new()).await.expect("registry back");
}

/// A registry found down (after the retries) is not asked again for a few seconds: a
/// reader of many records whose schemas are not cached fails each at once instead of
/// waiting out the retries for every one (`herald tail` spent 0.8 s and three warnings per
/// record). Then it is asked again, and once it answers the schemas come.
#[tokio::test]
async fn a_registry_found_down_is_not_asked_again_at_once() {
    let fake = FakeRegistry::start().await;
    let one = fake.insert("x", &serde_json::to_string(&placed().schema).expect("json"));
    let two = fake.insert("y", &serde_json::to_string(&placed().schema).expect("json"));
    fake.set_down(true);
    let client = registry(&fake);
    assert!(client.schema(one).await.expect_err("down").is_transient());
    assert_eq!(fake.requests(), 3, "every attempt of the backoff");
    let at_once = client.schema(two).await.expect_err("still down, as far as it knows");
    assert!(matches!(&at_once, RegistryError::Unavailable { reason, .. } if reason.contains("503") && reason.contains("ms ago")), "{at_once:?}");
    assert_eq!(fake.requests(), 3, "not asked again");
    fake.set_down(false);
    herald_testkit::wait_until(std::time::Duration::from_secs(30), "the registry asked again once it is back", || {
        let client = client.clone();
        async move { client.schema(two).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn a_short_outage_is_absorbed_by_the_retries() {
    let fake = FakeRegistry::start().await;
    let id = fake.insert("x", &serde_json::to_string(&placed().schema).expect("json"));
    fake.fail_next(2);
    let known = registry(&fake).schema(id).await.expect("third attempt succeeds");
    assert_eq!(known.name, "shop.orders.OrderPlaced");
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn refused_connections_are_transient() {
    // A port nobody listens on: bind, note the address, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let client = Registry::new(RegistryConfig::new(url).backoff(quick_backoff())).expect("client");
    let err = client.schema(1).await.expect_err("nobody listens");
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, RegistryError::Unavailable { attempts: 3, .. }), "{err:?}");
}

#[tokio::test]
async fn dual_reads_both_framings_and_writes_the_configured_one() {
    let fake = FakeRegistry::start().await;
    let schemas = order_schemas();
    let formats = CodecConfig::new(Format::SingleObject).topic("migrated", Format::Confluent);
    let dual = Dual::new(schemas.clone(), Confluent::new(registry(&fake)), formats);
    let schema = placed();

    let mut single = Vec::new();
    dual.write_header("legacy", &schema, &mut single).await.expect("single-object");
    assert_eq!(&single[..2], &[0xC3, 0x01]);
    let mut confluent = Vec::new();
    dual.write_header("migrated", &schema, &mut confluent).await.expect("confluent");
    assert_eq!(confluent, [0, 0, 0, 0, 1]);

    for payload in [&single, &confluent] {
        let (writer, _) = dual.read_header(payload).await.expect("readable");
        assert!(Arc::ptr_eq(&writer, &schema), "the local schema is preferred to the registry's copy");
    }
    assert!(matches!(dual.read_header(&[]).await, Err(DecodeError::Empty)));
    assert!(matches!(dual.read_header(b"{}").await, Err(DecodeError::BadMagic { .. })));
    assert!(matches!(dual.read_header(&[0, 0, 1]).await, Err(DecodeError::TruncatedFrame { .. })));
    let empty = Dual::new(SchemaSet::default(), Confluent::new(registry(&fake)), CodecConfig::default());
    assert!(matches!(empty.read_header(&single).await, Err(DecodeError::UnknownFingerprint(_))));
}

#[tokio::test]
async fn a_non_avro_schema_is_refused() {
    let fake = FakeRegistry::start().await;
    let client = registry(&fake);
    let id = fake.insert("s", r#"{"type": "not-a-type"}"#);
    let err = client.schema(id).await.expect_err("invalid");
    assert!(matches!(err, RegistryError::InvalidSchema { .. }), "{err:?}");
}
