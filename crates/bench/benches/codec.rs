//! The Avro codec alone, no broker: is encoding or decoding what limits throughput?
//!
//! ```text
//! cargo bench -p herald-bench --features criterion --bench codec
//! ```
//!
//! One ~200-byte `OrderPlaced` (the `bus` benchmark's workload), per iteration:
//! - `encode/herald_record`: `Publisher::encode`, everything `publish` does before
//!   handing the record to librdkafka (frame, datum, CloudEvents headers, key).
//! - `encode/herald_datum`: Herald's datum encoder alone (`encode_datum`, serde straight to
//!   Avro).
//! - `encode/avro_value_path`: apache-avro via `Value` (`to_value`, then `to_avro_datum`).
//! - `decode/herald_event`: Herald's consumer decode of the value (frame lookup,
//!   `OrderEvent::decode`, strict datum reading).
//! - `decode/herald_event_and_metadata`: the same plus `Metadata::from_headers`, which is
//!   everything the consumer decodes per record.
//! - `decode/avro_value_path`: the straightforward apache-avro decode the raw consumer of
//!   the `bus` benchmark does (`from_avro_datum`, then `from_value`).

use std::hint::black_box;

use apache_avro::Schema;
use criterion::{criterion_group, criterion_main, Criterion};
use herald_bench::workload::{Workload, FRAME_LEN};
use herald_bus::codec::SingleObject;
use herald_bus::{Event, EventFamily, KafkaConfig, Metadata, Publisher, PublisherOptions, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use rdkafka::message::Headers;

fn codec(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let event = Workload::new(1, 200).events.remove(0);
    let topic = Topic::<OrderEvent>::named("herald.bench.codec");
    let known = OrderEvent::schemas().latest(OrderPlaced::TYPE).expect("member").clone();
    let schema = Schema::parse_str(OrderPlaced::SCHEMA).expect("schema");
    // Creating a producer does not connect; nothing is sent.
    let publisher = runtime
        .block_on(async { Publisher::new(&KafkaConfig::new("127.0.0.1:1"), PublisherOptions::new("/herald/bench")) })
        .expect("publisher");
    let record = runtime.block_on(publisher.encode(&topic, &event, &publisher.metadata_for(&event))).expect("encodes");
    let payload = record.payload.clone();
    let headers = record.headers.clone();
    let codec = SingleObject::new(OrderEvent::schemas().clone());

    let mut encode = c.benchmark_group("encode");
    encode.bench_function("herald_record", |b| {
        b.to_async(&runtime).iter(|| async { black_box(publisher.encode(&topic, &event, &publisher.metadata_for(&event)).await.expect("encodes")) })
    });
    encode.bench_function("herald_datum", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(256);
            herald_bus::publisher::encode_datum(&known, black_box(&event), &mut out).expect("encodes");
            out
        })
    });
    encode.bench_function("avro_value_path", |b| {
        b.iter(|| {
            let value = apache_avro::to_value(black_box(&event)).expect("to value");
            apache_avro::to_avro_datum(&schema, value).expect("encodes")
        })
    });
    encode.finish();

    let mut decode = c.benchmark_group("decode");
    decode.bench_function("herald_event", |b| {
        b.iter(|| {
            let (writer, datum) = codec.split(black_box(&payload)).expect("framed");
            OrderEvent::decode(&writer.name, &writer, datum).expect("decodes")
        })
    });
    decode.bench_function("herald_event_and_metadata", |b| {
        b.iter(|| {
            let (writer, datum) = codec.split(black_box(&payload)).expect("framed");
            let event = OrderEvent::decode(&writer.name, &writer, datum).expect("decodes");
            let meta = Metadata::from_headers(Some(headers.as_borrowed()), Some(&record.key), &writer.name).expect("metadata");
            (event, meta)
        })
    });
    decode.bench_function("avro_value_path", |b| {
        b.iter(|| {
            let mut datum = &black_box(&payload)[FRAME_LEN..];
            let value = apache_avro::from_avro_datum(&schema, &mut datum, None).expect("decodes");
            apache_avro::from_value::<OrderPlaced>(&value).expect("converts")
        })
    });
    decode.finish();
    assert!(headers.count() >= 7, "the record carries the CloudEvents headers");
}

criterion_group!(benches, codec);
criterion_main!(benches);
