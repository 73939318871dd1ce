//! The client against the real registry (`HERALD_REGISTRY_URL`): the documented calls and
//! their 404s, as the server answers them.

mod support;

use herald_registry::{Confluent, RegistryError, SubjectStrategy};
use support::real_registry;

#[tokio::test]
async fn register_lookup_fetch_and_not_found() {
    let registry = real_registry();
    // Written the way apache-avro serializes it (namespace apart): Apicurio's normalization
    // does not equate a dotted name with name + namespace.
    let short = format!("R{}", std::process::id());
    let name = format!("herald.test.{short}");
    let schema = format!(r#"{{"type": "record", "namespace": "herald.test", "name": "{short}", "fields": [{{"name": "n", "type": "int"}}]}}"#);
    let topic = herald_testkit::unique("t.registry");
    let subject = SubjectStrategy::TopicRecordName.subject(&topic, &name);

    let err = registry.lookup(&subject, &schema).await.expect_err("not registered yet");
    assert!(err.is_not_found(), "{err:?}");
    let id = registry.register(&subject, &schema).await.expect("registered");
    assert_eq!(registry.register(&subject, &schema).await.expect("idempotent"), id);
    assert_eq!(registry.lookup(&subject, &schema).await.expect("found"), id);
    let fetched = registry.schema(id).await.expect("by id");
    assert_eq!(fetched.name, name);

    // The codec finds the same id through its strategy without registering.
    let codec = Confluent::new(registry.clone()).subject_strategy(SubjectStrategy::TopicRecordName).auto_register(false);
    assert_eq!(codec.id_for(&topic, &fetched).await.expect("looked up"), id);

    let err = registry.schema(u32::MAX / 2).await.expect_err("unknown id");
    assert!(matches!(err, RegistryError::NotFound { status: 404, code: 40403, .. }), "{err:?}");
}

/// Looked up without registering, a schema gets only an id whose registered schema is the
/// same one: Apicurio's normalized lookup also matches a schema with its fields in another
/// order (another binary layout), whose events the id's readers would misread.
#[tokio::test]
async fn a_lookup_matches_only_the_same_schema_not_a_reordered_one() {
    let registry = real_registry();
    let short = format!("Reordered{}", std::process::id());
    let name = format!("herald.test.{short}");
    let fields_ab = r#"[{"name": "a", "type": "int"}, {"name": "b", "type": "string"}]"#;
    let fields_ba = r#"[{"name": "b", "type": "string"}, {"name": "a", "type": "int"}]"#;
    let schema = |fields: &str| format!(r#"{{"type": "record", "namespace": "herald.test", "name": "{short}", "fields": {fields}}}"#);
    let topic = herald_testkit::unique("t.registry.order");
    let subject = SubjectStrategy::TopicRecordName.subject(&topic, &name);
    let id = registry.register(&subject, &schema(fields_ab)).await.expect("registered");
    let mut set = herald_bus::schema::SchemaSet::default();
    let same = set.add_str(&schema(fields_ab)).expect("schema");
    let reordered = herald_bus::schema::SchemaSet::default().add_str(&schema(fields_ba)).expect("schema");
    assert_eq!(registry.id_for(&subject, &same, false).await.expect("the same schema"), id);
    let err = registry.id_for(&subject, &reordered, false).await.expect_err("another layout");
    assert!(err.is_not_found(), "{err:?}");
}

/// A logical type is part of the schema though not of its fingerprint: a writer's
/// `timestamp-micros` (or a decimal's other scale) has the fingerprint of the local
/// `timestamp-millis`. Reading, the codec used the local schema for the id whenever the
/// fingerprints matched, so a value written in microseconds was read as milliseconds
/// (1000 times off, silently); looking up, the local schema took the id of the other one.
#[tokio::test]
async fn a_schema_differing_only_in_a_logical_type_is_another_schema() {
    let registry = real_registry();
    let short = format!("Logical{}", std::process::id());
    let schema = |unit: &str, scale: u32| {
        format!(
            r#"{{"type": "record", "namespace": "herald.test", "name": "{short}", "fields": [{{"name": "at", "type": {{"type": "long", "logicalType": "timestamp-{unit}"}}}}, {{"name": "amount", "type": {{"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": {scale}}}}}]}}"#
        )
    };
    for (remote, local) in [(schema("micros", 2), schema("millis", 2)), (schema("millis", 4), schema("millis", 2))] {
        let topic = herald_testkit::unique("t.registry.logical");
        let subject = SubjectStrategy::TopicName.subject(&topic, "");
        let id = registry.register(&subject, &remote).await.expect("registered");
        let mut set = herald_bus::schema::SchemaSet::default();
        let known = set.add_str(&local).expect("local schema");
        let theirs = herald_bus::schema::SchemaSet::default().add_str(&remote).expect("remote schema");
        assert_eq!(known.fingerprint, theirs.fingerprint, "the fingerprint does not cover logical types");

        let codec = Confluent::new(registry.clone()).subject_strategy(SubjectStrategy::TopicName).with_schemas(set).auto_register(false);
        let writer = codec.writer(id).await.expect("writer schema");
        assert!(writer.schema == theirs.schema && writer.schema != known.schema, "the id's own schema is the writer: {}", writer.json().unwrap_or_default());

        let err = codec.id_for(&topic, &known).await.expect_err("the local schema is not the registered one");
        assert!(err.is_not_found(), "{err:?}");
    }
}

/// A Confluent serializer registers a value's schema as it is: a primitive, or a union of
/// records (one subject for several event types). Fetched by id, they are read like any
/// other (before, "schema id N is not a usable Avro schema: schema is not a named type").
#[tokio::test]
async fn unnamed_writer_schemas_are_fetched_and_read() {
    use apache_avro::types::Value;
    let registry = real_registry();
    let short = format!("U{}", std::process::id());
    let union = format!(
        r#"[{{"type": "record", "namespace": "herald.test", "name": "{short}A", "fields": [{{"name": "n", "type": "int"}}]}}, {{"type": "record", "namespace": "herald.test", "name": "{short}B", "fields": []}}]"#
    );
    let topic = herald_testkit::unique("t.registry.unnamed");
    let string_id = registry.register(&format!("{topic}-value"), r#""string""#).await.expect("registered");
    let union_id = registry.register(&format!("{topic}-union-value"), &union).await.expect("registered");

    let string = registry.schema(string_id).await.expect("a primitive by id");
    assert_eq!(string.name, "string");
    assert_eq!(herald_bus::codec::decode_value(&string, None, b"\x04hi").expect("decoded"), Value::String("hi".into()));
    let union = registry.schema(union_id).await.expect("a union by id");
    assert_eq!(union.name, format!("union [herald.test.{short}A, herald.test.{short}B]"));
    // Branch 0, the record with n = 3.
    let value = herald_bus::codec::decode_value(&union, None, b"\x00\x06").expect("decoded");
    assert_eq!(value, Value::Union(0, Box::new(Value::Record(vec![("n".into(), Value::Int(3))]))));
}
