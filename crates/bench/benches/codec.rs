//! The Avro codec alone, no broker: Herald's encode and decode of one `OrderPlaced`
//! against apache-avro's `Value` path and against `serde_avro_fast`.
//!
//! ```text
//! cargo bench -p herald-bench --features criterion --bench codec
//! ```
//!
//! One `OrderPlaced` of the `bus` benchmark's workload (three order lines and a note; a
//! 190-byte datum, 200 bytes framed), per iteration:
//!
//! - `encode/herald_record`: `Publisher::encode`, everything `publish` does before
//!   handing the record to librdkafka (frame, datum, CloudEvents headers, key).
//! - `encode/herald_datum`: Herald's datum encoder alone (`encode_datum`:
//!   `apache_avro::write_avro_datum_ref`, serde straight to Avro).
//! - `encode/avro_value_path`: apache-avro via `Value` (`to_value`, then `to_avro_datum`).
//! - `encode/serde_avro_fast`: `serde_avro_fast::to_datum` with a `SerializerConfig` built
//!   once, into a new `Vec` of the same capacity as `herald_datum`'s.
//! - `decode/herald_event`: Herald's consumer decode of the value (frame lookup,
//!   `OrderEvent::decode`: strict `decode_value`, then `from_value`).
//! - `decode/herald_event_and_metadata`: the same plus `Metadata::from_headers`, which is
//!   everything the consumer decodes per record.
//! - `decode/herald_decode_value`: `herald_bus::codec::decode_value` (no reader schema,
//!   as for a writer of the same version) and `apache_avro::from_value`, without the frame
//!   lookup and the family dispatch.
//! - `decode/avro_value_path`: the plain apache-avro decode the raw consumer of the `bus`
//!   benchmark does (`from_avro_datum`, then `from_value`).
//! - `decode/serde_avro_fast`: `serde_avro_fast::from_datum_slice` into `OrderPlaced`.
//! - `decode/serde_avro_fast_strict`: the same through `DeserializerState`, refusing
//!   trailing bytes as `decode_value` does (what Herald would need on the hot path).
//!
//! - `resolve/herald_event`: `OrderEvent::decode` of a datum written with `OrderPlaced` v1,
//!   read as the newest version (schema resolution: the logical-type checks, `conform`,
//!   apache-avro's `resolve`, the union repair, `from_value`).
//! - `resolve/avro_value_path`: apache-avro's `from_avro_datum` with the newest schema as
//!   the reader, then `from_value`: what a user resolving with apache-avro would write.
//!
//! Outside the timed loops the bench asserts that every encoder writes the same bytes and
//! that every decoder returns the same `OrderPlaced`, and that the strict decoders refuse
//! a truncated datum and one with a trailing byte.
//!
//! Python `fastavro` on the same datum, for scale: `interop/python/codec_bench.py`. The
//! bench prints the datum's hex on stderr; pass it to that script as `--expect-hex`.

use std::hint::black_box;
use std::io::BufRead;
use std::time::Duration;

use apache_avro::Schema;
use criterion::{criterion_group, criterion_main, Criterion};
use herald_bench::workload::{Workload, FRAME_LEN};
use herald_bus::codec::SingleObject;
use herald_bus::{Event, EventFamily, KafkaConfig, Metadata, Publisher, PublisherOptions, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use rdkafka::message::Headers;

/// `serde_avro_fast` decode that, like `herald_bus::codec::decode_value`, fails on a
/// truncated datum and on trailing bytes.
fn fast_decode_strict(datum: &[u8], schema: &serde_avro_fast::Schema) -> Result<OrderPlaced, String> {
    let mut state = serde_avro_fast::de::DeserializerState::from_slice(datum, schema);
    let event: OrderPlaced = serde::Deserialize::deserialize(state.deserializer()).map_err(|e| e.to_string())?;
    let mut rest = state.into_reader();
    let left = rest.fill_buf().map_err(|e| e.to_string())?.len();
    if left != 0 {
        return Err(format!("{left} trailing bytes after the datum"));
    }
    Ok(event)
}

fn codec(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let event = Workload::new(1, 200).events.remove(0);
    let topic = Topic::<OrderEvent>::named("herald.bench.codec");
    let known = OrderEvent::schemas().latest(OrderPlaced::TYPE).expect("member").clone();
    let schema = Schema::parse_str(OrderPlaced::SCHEMA).expect("schema");
    let fast_schema: serde_avro_fast::Schema = OrderPlaced::SCHEMA.parse().expect("serde_avro_fast parses the schema");
    let mut fast_config = serde_avro_fast::ser::SerializerConfig::new(&fast_schema);
    // Creating a producer does not connect; nothing is sent.
    let publisher = runtime
        .block_on(async { Publisher::new(&KafkaConfig::new("127.0.0.1:1"), PublisherOptions::new("/herald/bench")) })
        .expect("publisher");
    let record = runtime.block_on(publisher.encode(&topic, &event, &publisher.metadata_for(&event))).expect("encodes");
    let payload = record.payload.clone().expect("an event has a payload");
    let headers = record.headers.clone();
    let codec = SingleObject::new(OrderEvent::schemas().clone());
    let datum = &payload[FRAME_LEN..];

    // Every variant agrees, before anything is timed.
    {
        let mut herald = Vec::new();
        herald_bus::publisher::encode_datum(&known, &event, &mut herald).expect("encodes");
        let value_path = apache_avro::to_avro_datum(&schema, apache_avro::to_value(&event).expect("to value")).expect("encodes");
        let fast = serde_avro_fast::to_datum(&event, Vec::new(), &mut fast_config).expect("serde_avro_fast encodes");
        assert_eq!(herald, datum, "encode_datum writes the datum of Publisher::encode");
        assert_eq!(value_path, datum, "the Value path writes the same bytes");
        assert_eq!(fast, datum, "serde_avro_fast writes the same bytes");
        let hex: String = datum.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!("OrderPlaced datum ({} bytes, {} framed): {hex}", datum.len(), payload.len());

        let (writer, framed) = codec.split(&payload).expect("framed");
        assert_eq!(framed, datum);
        let decoded = [
            match OrderEvent::decode(&writer.name, &writer, framed).expect("decodes") {
                Some(OrderEvent::Placed(e)) => e,
                other => panic!("not an OrderPlaced: {other:?}"),
            },
            apache_avro::from_value(&herald_bus::codec::decode_value(&known, None, datum).expect("decodes")).expect("converts"),
            apache_avro::from_value(&apache_avro::from_avro_datum(&schema, &mut &datum[..], None).expect("decodes")).expect("converts"),
            serde_avro_fast::from_datum_slice::<OrderPlaced>(datum, &fast_schema).expect("serde_avro_fast decodes"),
            fast_decode_strict(datum, &fast_schema).expect("serde_avro_fast decodes"),
        ];
        for (i, d) in decoded.iter().enumerate() {
            assert_eq!(d, &event, "decoder {i} returns the event");
        }

        // The strict decoders refuse what the lax ones would let through.
        let mut long = datum.to_vec();
        long.push(0);
        for bad in [&datum[..datum.len() - 1], &long[..]] {
            assert!(herald_bus::codec::decode_value(&known, None, bad).is_err(), "decode_value refuses {} bytes", bad.len());
            assert!(fast_decode_strict(bad, &fast_schema).is_err(), "strict serde_avro_fast refuses {} bytes", bad.len());
        }
        assert!(headers.count() >= 7, "the record carries the CloudEvents headers");
    }

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
    encode.bench_function("serde_avro_fast", |b| {
        b.iter(|| serde_avro_fast::to_datum(black_box(&event), Vec::with_capacity(256), &mut fast_config).expect("encodes"))
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
            let meta = Metadata::from_headers(Some(headers.as_borrowed()), record.key.as_deref(), &writer.name).expect("metadata");
            (event, meta)
        })
    });
    decode.bench_function("herald_decode_value", |b| {
        b.iter(|| {
            let value = herald_bus::codec::decode_value(&known, None, black_box(datum)).expect("decodes");
            apache_avro::from_value::<OrderPlaced>(&value).expect("converts")
        })
    });
    decode.bench_function("avro_value_path", |b| {
        b.iter(|| {
            let mut input = black_box(datum);
            let value = apache_avro::from_avro_datum(&schema, &mut input, None).expect("decodes");
            apache_avro::from_value::<OrderPlaced>(&value).expect("converts")
        })
    });
    decode.bench_function("serde_avro_fast", |b| {
        b.iter(|| serde_avro_fast::from_datum_slice::<OrderPlaced>(black_box(datum), &fast_schema).expect("decodes"))
    });
    decode.bench_function("serde_avro_fast_strict", |b| {
        b.iter(|| fast_decode_strict(black_box(datum), &fast_schema).expect("decodes"))
    });
    decode.finish();

    // An older version's event read as the newest (a replay of a log written before
    // `placed_at` was added): Avro schema resolution, no serde_avro_fast.
    let v1 = Schema::parse_str(include_str!("../../../schemas/shop/orders/OrderPlaced/v1.avsc")).expect("v1");
    let v1_known = OrderEvent::schemas().by_fingerprint(&herald_bus::schema::Fingerprint::of(&v1)).expect("v1 is known").clone();
    let apache_avro::types::Value::Record(mut fields) = apache_avro::to_value(&event).expect("to value") else { panic!("a record") };
    fields.retain(|(name, _)| name != "placed_at");
    let old = apache_avro::to_avro_datum(&v1, apache_avro::types::Value::Record(fields)).expect("encodes with v1");
    let read_as_newest = OrderPlaced { placed_at: None, ..event.clone() };
    match OrderEvent::decode(&v1_known.name, &v1_known, &old).expect("decodes") {
        Some(OrderEvent::Placed(e)) => assert_eq!(e, read_as_newest, "Herald resolves v1 to the newest"),
        other => panic!("not an OrderPlaced: {other:?}"),
    }
    let resolved: OrderPlaced = apache_avro::from_value(&apache_avro::from_avro_datum(&v1, &mut &old[..], Some(&schema)).expect("resolves")).expect("converts");
    assert_eq!(resolved, read_as_newest, "apache-avro resolves v1 to the newest");
    let mut resolve = c.benchmark_group("resolve");
    resolve.bench_function("herald_event", |b| b.iter(|| OrderEvent::decode(&v1_known.name, &v1_known, black_box(&old)).expect("decodes")));
    resolve.bench_function("avro_value_path", |b| {
        b.iter(|| {
            let value = apache_avro::from_avro_datum(&v1, &mut black_box(&old[..]), Some(&schema)).expect("resolves");
            apache_avro::from_value::<OrderPlaced>(&value).expect("converts")
        })
    });
    resolve.finish();
}

fn config() -> Criterion {
    // 10 variants × (1 s warm-up + 3 s measuring): under a minute per run, so the run can be
    // repeated on a shared machine.
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = codec }
criterion_main!(benches);
