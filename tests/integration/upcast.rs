//! Schema evolution end to end: events written by older services (v1 and v2 of a type)
//! reach a handler written against v3, through an upcaster (a unit change Avro resolution
//! cannot express) and Avro resolution (a new field with a default).

use herald_bus::codec::DecodeError;
use herald_bus::schema::KnownSchema;
use herald_bus::{Event, Topic};
use herald_testkit::{kafka, topic, unique, wait_until};
use serde::{Deserialize, Serialize};

use crate::support::{publisher, Running, DEADLINE};

const V1: &str = r#"{"type":"record","name":"Reading","namespace":"weather","fields":[
    {"name":"station","type":"string"},{"name":"celsius","type":"double"}]}"#;
const V2: &str = r#"{"type":"record","name":"Reading","namespace":"weather","fields":[
    {"name":"station","type":"string"},{"name":"kelvin","type":"double"}]}"#;
const V3: &str = r#"{"type":"record","name":"Reading","namespace":"weather","fields":[
    {"name":"station","type":"string"},{"name":"kelvin","type":"double"},
    {"name":"quality","type":"string","default":"unknown"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ReadingV1 {
    station: String,
    celsius: f64,
}

impl Event for ReadingV1 {
    const TYPE: &'static str = "weather.Reading";
    const SCHEMA: &'static str = V1;
    fn aggregate_id(&self) -> &str {
        &self.station
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ReadingV2 {
    station: String,
    kelvin: f64,
}

impl Event for ReadingV2 {
    const TYPE: &'static str = "weather.Reading";
    const SCHEMA: &'static str = V2;
    const HISTORY: &'static [&'static str] = &[V1];
    fn aggregate_id(&self) -> &str {
        &self.station
    }
    fn upcast(writer: &KnownSchema, datum: &[u8]) -> Option<Result<Self, DecodeError>> {
        herald_bus::upcast::from(writer, datum, |v1: ReadingV1| ReadingV2 { station: v1.station, kelvin: v1.celsius + 273.15 })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    station: String,
    kelvin: f64,
    quality: String,
}

impl Event for Reading {
    const TYPE: &'static str = "weather.Reading";
    const SCHEMA: &'static str = V3;
    // v1 needs the upcaster chain; v2 only needs resolution (a new field with a default).
    const HISTORY: &'static [&'static str] = &[V1, V2];
    fn aggregate_id(&self) -> &str {
        &self.station
    }
    fn upcast(writer: &KnownSchema, datum: &[u8]) -> Option<Result<Self, DecodeError>> {
        // v1 goes through v2's upcaster. v2 writers are left to Avro resolution (the new
        // field has a default), so this asks v2's upcaster rather than using
        // `upcast::from::<ReadingV2>`, which would take v2 writers too.
        ReadingV2::upcast(writer, datum).map(|v2| v2.map(|r| Reading { station: r.station, kelvin: r.kelvin, quality: "unknown".into() }))
    }
}

herald_bus::family! {
    #[derive(Debug, Clone, PartialEq)]
    enum WeatherV1 { Reading(ReadingV1) }
}
herald_bus::family! {
    #[derive(Debug, Clone, PartialEq)]
    enum WeatherV2 { Reading(ReadingV2) }
}
herald_bus::family! {
    #[derive(Debug, Clone, PartialEq)]
    enum Weather { Reading(Reading) }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_versions_reach_a_v3_handler_through_upcasters_and_resolution() {
    let config = kafka().await;
    let name = topic(&config, "weather", 1).await;
    let publisher = publisher(&config);
    // Old services still publishing v1 and v2 on the same topic.
    publisher.publish(&Topic::<WeatherV1>::named(&name), &ReadingV1 { station: "oslo".into(), celsius: 20.0 }).await.expect("v1");
    publisher.publish(&Topic::<WeatherV2>::named(&name), &ReadingV2 { station: "oslo".into(), kelvin: 300.0 }).await.expect("v2");
    let current = Reading { station: "oslo".into(), kelvin: 250.0, quality: "good".into() };
    publisher.publish(&Topic::<Weather>::named(&name), &current).await.expect("v3");

    let seen: std::sync::Arc<std::sync::Mutex<Vec<Reading>>> = Default::default();
    let handler = {
        let seen = seen.clone();
        move |e: herald_bus::Envelope<Weather>| {
            let Weather::Reading(r) = e.event;
            seen.lock().unwrap().push(r);
            async { Ok(()) }
        }
    };
    let running = Running::start(herald_bus::Consumer::builder(config.clone(), unique("g")).subscribe(&Topic::<Weather>::named(&name), handler)).await;
    wait_until(DEADLINE, "three readings handled", || async { seen.lock().unwrap().len() >= 3 }).await;
    running.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![
        Reading { station: "oslo".into(), kelvin: 293.15, quality: "unknown".into() },
        Reading { station: "oslo".into(), kelvin: 300.0, quality: "unknown".into() },
        current,
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_consumer_reads_events_of_a_newer_version() {
    let config = kafka().await;
    let name = topic(&config, "weather.newer", 1).await;
    // A newer service publishes v3 (an added field with a default).
    let newer = Reading { station: "bergen".into(), kelvin: 280.0, quality: "good".into() };
    publisher(&config).publish(&Topic::<Weather>::named(&name), &newer).await.expect("v3");

    // A consumer still built with v2 that was given the newer schema (from schemas/ or a
    // registry): Avro resolution drops the field it does not know.
    let mut writers = herald_bus::schema::SchemaSet::default();
    writers.add_str(V3).expect("v3 schema");
    let seen: std::sync::Arc<std::sync::Mutex<Vec<ReadingV2>>> = Default::default();
    let handler = {
        let seen = seen.clone();
        move |e: herald_bus::Envelope<WeatherV2>| {
            let WeatherV2::Reading(r) = e.event;
            seen.lock().unwrap().push(r);
            async { Ok(()) }
        }
    };
    let running = Running::start(
        herald_bus::Consumer::builder(config.clone(), unique("g")).schemas(writers).subscribe(&Topic::<WeatherV2>::named(&name), handler),
    )
    .await;
    wait_until(DEADLINE, "the v3 reading handled by the v2 consumer", || async { !seen.lock().unwrap().is_empty() }).await;
    running.shutdown().await;
    assert_eq!(seen.lock().unwrap().clone(), vec![ReadingV2 { station: "bergen".into(), kelvin: 280.0 }]);
}
