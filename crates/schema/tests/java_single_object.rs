//! Herald's single-object events and Java's cross over, logical types included: Apache
//! Avro's Java `BinaryMessageDecoder` finds the writer schema of Herald's events by
//! fingerprint (`SchemaStore.Cache`, keyed by `SchemaNormalization.parsingFingerprint64`)
//! and reads `timestamp-millis` as the same instant; Herald finds and decodes what Java's
//! `BinaryMessageEncoder` writes from every stored sample (`reference/SingleObject.java`).
//! Runs in CI always, locally when Java 17+ and Maven are installed (see `support`).

mod support;

use std::path::{Path, PathBuf};

use herald_bus::codec::SingleObject;
use herald_bus::timestamp::TimestampMillis;
use herald_bus::{Event, EventFamily};
use herald_schema::{Catalog, sample::Sample};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderEvent, OrderPlaced};
use serde_json::{Value, json};
use support::repo_root;

/// A fresh folder for payload files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("herald-{test}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn at(millis: i64) -> Option<TimestampMillis> {
    TimestampMillis::from_millis(millis)
}

/// `C3 01`, the writer's fingerprint, the datum: what Herald's publisher sends, for event
/// `E` of family `F`.
fn single_object<F: EventFamily, E: Event>(event: &E) -> Vec<u8> {
    let known = F::schemas().latest(E::TYPE).expect("member");
    let mut payload = vec![0xC3, 0x01];
    payload.extend_from_slice(&known.fingerprint.0);
    herald_bus::publisher::encode_datum(known, event, &mut payload).expect("encodes");
    payload
}

/// The event as Java prints it: its fields, the instant as ISO 8601 with milliseconds.
fn as_java_prints<E: Event>(event: &E, time_field: &str) -> Value {
    let mut value = serde_json::to_value(event).expect("to JSON");
    let instant = value[time_field].as_i64().and_then(TimestampMillis::from_millis);
    value[time_field] = instant.map_or(Value::Null, |t| json!(t.as_datetime().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()));
    value
}

#[test]
fn java_finds_and_decodes_herald_events_by_fingerprint() {
    let Some(classpath) = support::java_classpath("java_finds_and_decodes_herald_events_by_fingerprint") else { return };
    let scratch = Scratch::new("java-decodes");
    let placed = OrderPlaced { placed_at: at(1_764_583_200_123), note: Some("zweimal klingeln ☎".into()), ..OrderPlaced::example("o-1", "c-1", 4_250) };
    let unplaced = OrderPlaced { placed_at: None, ..OrderPlaced::example("o-2", "c-2", 1) };
    let confirmed = OrderConfirmed { confirmed_at: at(1_764_583_201_001), ..OrderConfirmed::example("o-1", "p-1") };
    let cancelled = OrderCancelled { cancelled_at: at(-1), ..OrderCancelled::example("o-2", "changed mind", Some("customer")) };
    let cases = [
        (OrderPlaced::TYPE, single_object::<OrderEvent, _>(&placed), as_java_prints(&placed, "placed_at")),
        (OrderPlaced::TYPE, single_object::<OrderEvent, _>(&unplaced), as_java_prints(&unplaced, "placed_at")),
        (OrderConfirmed::TYPE, single_object::<OrderEvent, _>(&confirmed), as_java_prints(&confirmed, "confirmed_at")),
        (OrderCancelled::TYPE, single_object::<OrderEvent, _>(&cancelled), as_java_prints(&cancelled, "cancelled_at")),
    ];
    let mut files = Vec::new();
    for (i, (_, payload, _)) in cases.iter().enumerate() {
        let file = scratch.0.join(format!("{i}.bin"));
        std::fs::write(&file, payload).expect("write payload");
        files.push(file);
    }
    let mut args = vec![PathBuf::from("decode"), repo_root().join("schemas")];
    args.extend(files.iter().cloned());
    let out = support::java(&classpath, "SingleObject", &args);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    assert_eq!(lines.len(), cases.len(), "{out}");
    for ((type_name, payload, expected), line) in cases.iter().zip(&lines) {
        assert!(line.get("error").is_none(), "Java cannot read Herald's {type_name}: {line}");
        let fingerprint: String = payload[2..10].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!((line["type"].as_str(), line["fingerprint"].as_str()), (Some(*type_name), Some(fingerprint.as_str())), "{line}");
        assert_eq!(&line["data"], expected, "what Java decoded (left), what Herald published (right)");
    }
}

/// `schemas/.../<Type>/vN.avsc` and its sample, for every stored version.
fn stored_versions() -> Vec<(String, herald_schema::catalog::Version)> {
    let catalog = Catalog::load(repo_root().join("schemas")).unwrap_or_else(|e| panic!("{e}"));
    catalog.type_names().flat_map(|t| catalog.versions(t).iter().map(move |v| (t.to_owned(), v.clone()))).collect()
}

/// The time field of a decoded event, in milliseconds.
fn time_of(event: &OrderEvent) -> Option<i64> {
    match event {
        OrderEvent::Placed(e) => e.placed_at,
        OrderEvent::Confirmed(e) => e.confirmed_at,
        OrderEvent::Cancelled(e) => e.cancelled_at,
    }
    .map(|t| t.as_millis())
}

/// The time a sample stores (Avro JSON encoding: `{"long": millis}`), if its version has one.
fn time_in_sample(path: &Path) -> Option<i64> {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("sample")).expect("sample JSON");
    let object = json.as_object().expect("a record");
    object.iter().find(|(k, _)| k.ends_with("_at")).and_then(|(_, v)| v["long"].as_i64())
}

#[test]
fn herald_finds_and_decodes_java_events_of_every_stored_version() {
    let Some(classpath) = support::java_classpath("herald_finds_and_decodes_java_events_of_every_stored_version") else { return };
    let scratch = Scratch::new("herald-decodes");
    // The order family, whose versions carry times; every other stored schema's
    // fingerprint is checked against Java's by the canonical_reference tests.
    let versions: Vec<_> = stored_versions().into_iter().filter(|(t, _)| t.starts_with("shop.orders.")).collect();
    assert!(versions.iter().any(|(_, v)| v.number == Some(2)), "the shop events have a v2");
    let mut args = vec![PathBuf::from("encode")];
    for (i, (_, version)) in versions.iter().enumerate() {
        args.extend([version.path.clone(), version.sample_path(), scratch.0.join(format!("{i}.bin"))]);
    }
    support::java(&classpath, "SingleObject", &args);

    let codec = SingleObject::new(OrderEvent::schemas().clone());
    for (i, (type_name, version)) in versions.iter().enumerate() {
        let label = format!("{type_name} {}", version.label());
        let payload = std::fs::read(scratch.0.join(format!("{i}.bin"))).expect("Java wrote the payload");
        let (writer, datum) = codec.split(&payload).unwrap_or_else(|e| panic!("{label}: Herald cannot find Java's writer: {e}"));
        assert_eq!(writer.fingerprint, version.fingerprint(), "{label}");
        let sample = Sample::load(&version.avsc, &version.sample_path()).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(datum, sample.datum.as_slice(), "{label}: Java's datum equals Herald's encoding of the sample");
        let event = OrderEvent::decode(type_name, &writer, datum).unwrap_or_else(|e| panic!("{label}: {e}")).expect("a member");
        assert_eq!(time_of(&event), time_in_sample(&version.sample_path()), "{label}: the instant");
    }
}

/// An event whose schema uses a named type four times (`herald_testkit::parcels`): Java
/// finds its writer by Herald's fingerprint and decodes it field for field, and Herald
/// decodes what Java writes from the same values.
#[test]
fn a_schema_using_a_named_type_several_times_crosses_over_with_java() {
    use herald_testkit::parcels::{self, ParcelShipped, Parcels};
    let Some(classpath) = support::java_classpath("a_schema_using_a_named_type_several_times_crosses_over_with_java") else { return };
    let scratch = Scratch::new("java-parcels");
    let schemas = parcels::schemas_folder().expect("a schemas folder");
    let known = Parcels::schemas().latest(ParcelShipped::TYPE).expect("member");
    let examples = parcels::examples("p");

    // Herald encodes, Java decodes.
    let mut args = vec![PathBuf::from("decode"), schemas.clone()];
    for (i, parcel) in examples.iter().enumerate() {
        let file = scratch.0.join(format!("{i}.bin"));
        std::fs::write(&file, single_object::<Parcels, _>(parcel)).expect("write payload");
        args.push(file);
    }
    let out = support::java(&classpath, "SingleObject", &args);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    assert_eq!(lines.len(), examples.len(), "{out}");
    for (parcel, line) in examples.iter().zip(&lines) {
        assert!(line.get("error").is_none(), "Java cannot read Herald's parcel: {line}");
        assert_eq!((line["type"].as_str(), line["fingerprint"].as_str()), (Some(ParcelShipped::TYPE), Some(known.fingerprint.to_string().as_str())), "{line}");
        assert_eq!(line["data"], serde_json::to_value(parcel).expect("to JSON"), "what Java decoded (left), what Herald encoded (right)");
    }

    // Java encodes (from Avro's JSON encoding of the same values: a union branch is
    // named), Herald decodes.
    let mut args = vec![PathBuf::from("encode")];
    for (i, parcel) in examples.iter().enumerate() {
        let mut json = serde_json::to_value(parcel).expect("to JSON");
        if !json["return_to"].is_null() {
            json["return_to"] = json!({ "herald.tests.Address": json["return_to"].take() });
        }
        let data = scratch.0.join(format!("{i}.json"));
        std::fs::write(&data, json.to_string()).expect("write data");
        let avsc = schemas.join("herald/tests/ParcelShipped/v1.avsc");
        args.extend([avsc, data, scratch.0.join(format!("java-{i}.bin"))]);
    }
    support::java(&classpath, "SingleObject", &args);
    let codec = SingleObject::new(Parcels::schemas().clone());
    for (i, parcel) in examples.iter().enumerate() {
        let payload = std::fs::read(scratch.0.join(format!("java-{i}.bin"))).expect("Java wrote the payload");
        let (writer, datum) = codec.split(&payload).unwrap_or_else(|e| panic!("Herald cannot find Java's writer: {e}"));
        assert_eq!(writer.fingerprint, known.fingerprint);
        let decoded = Parcels::decode(&writer.name, &writer, datum).unwrap_or_else(|e| panic!("Herald cannot decode Java's parcel: {e}"));
        assert_eq!(decoded, Some(Parcels::Shipped(parcel.clone())));
    }
    let _ = std::fs::remove_dir_all(&schemas);
}
