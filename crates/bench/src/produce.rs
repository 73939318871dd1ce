//! Timed publish runs: Herald's `publish_all`, a bounded loop of Herald's `publish`, and a
//! raw rdkafka `FutureProducer` sending the same bytes: encoding each event as it goes
//! with the fastest Rust Avro (serde_avro_fast: the baseline), or with apache-avro's
//! `Value` path (for scale), or with every record encoded before the timer starts (the
//! transport ceiling).
//!
//! Every run starts with a fresh producer that has already delivered one warm-up record
//! to the run's topic (metadata fetched, idempotent producer id acquired), and stops when
//! the last delivery report arrived.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use herald_bus::publisher::Record;
use apache_avro::Schema;
use herald_bus::{Event, KafkaConfig, Publisher, PublisherOptions, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::broker::Clients;
use crate::machine::CpuTime;

/// Deliveries awaited at once, by Herald (its default `max_in_flight`) and by the raw
/// producer alike.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// How long a publish run may go on with nothing left in librdkafka before it counts as
/// stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(3);

/// The result of one publish run.
#[derive(Debug, Clone, Copy)]
pub struct ProduceRun {
    /// Records sent.
    pub events: usize,
    /// Records whose delivery failed (should be 0).
    pub failed: usize,
    /// From the first send to the last delivery report.
    pub elapsed: Duration,
    /// CPU seconds of this process over `elapsed` ([`CpuTime::steady`]).
    pub cpu: f64,
}

impl ProduceRun {
    /// CPU per event over the timed run, in µs.
    pub fn cpu_per_event(&self) -> f64 {
        self.cpu * 1e6 / self.events as f64
    }

    /// Acknowledged records per second.
    pub fn rate(&self) -> f64 {
        (self.events - self.failed) as f64 / self.elapsed.as_secs_f64()
    }
}

/// A publisher with Herald's defaults, warmed up on `topic`.
pub async fn herald_publisher(config: &KafkaConfig, topic: &Topic<OrderEvent>, warm_up: &OrderPlaced) -> Result<Publisher, crate::Error> {
    let publisher = Publisher::new(config, PublisherOptions::new("/herald/bench"))?;
    publisher.publish(topic, warm_up).await?;
    Ok(publisher)
}

/// Herald's `publish_all` over every event.
///
/// Fails when it has not finished after `deadline`, or as soon as it is stuck: librdkafka
/// has held no record for [`STUCK_AFTER`] (every delivery report arrived) while
/// `publish_all` still has not returned.
pub async fn herald_publish_all(publisher: &Publisher, topic: &Topic<OrderEvent>, events: &[OrderPlaced], deadline: Duration) -> Result<ProduceRun, crate::Error> {
    let (started, cpu) = (Instant::now(), CpuTime::steady());
    let publish = tokio::time::timeout(deadline, publisher.publish_all(topic, events));
    tokio::pin!(publish);
    let mut check = tokio::time::interval(Duration::from_millis(100));
    let mut idle_since: Option<Instant> = None;
    let results = loop {
        tokio::select! {
            done = &mut publish => break done.map_err(|_| stalled("Herald publish_all", &*publisher.producer(), deadline))?,
            _ = check.tick() => {
                if publisher.producer().in_flight_count() > 0 {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= STUCK_AFTER {
                    return Err(format!(
                        "Herald publish_all is stuck: librdkafka has held no record for {STUCK_AFTER:?} (every delivery report arrived) and publish_all has not returned after {:.1} s",
                        started.elapsed().as_secs_f64()
                    )
                    .into());
                }
            }
        }
    };
    let (elapsed, cpu) = (started.elapsed(), CpuTime::steady() - cpu);
    let failed = results.iter().filter(|r| r.is_err()).count();
    Ok(ProduceRun { events: events.len(), failed, elapsed, cpu })
}

/// Herald's `publish`, one call per event, at most [`MAX_IN_FLIGHT`] calls at once
/// (`buffer_unordered`): how an application publishing from many tasks drives it.
pub async fn herald_publish_loop(publisher: &Publisher, topic: &Topic<OrderEvent>, events: &[OrderPlaced], deadline: Duration) -> Result<ProduceRun, crate::Error> {
    let (started, cpu) = (Instant::now(), CpuTime::steady());
    let run = futures::stream::iter(events)
        .map(|event| publisher.publish(topic, event))
        .buffer_unordered(MAX_IN_FLIGHT)
        .fold(0usize, |failed, result| async move { failed + usize::from(result.is_err()) });
    let failed = tokio::time::timeout(deadline, run)
        .await
        .map_err(|_| stalled("Herald publish loop", &*publisher.producer(), deadline))?;
    Ok(ProduceRun { events: events.len(), failed, elapsed: started.elapsed(), cpu: CpuTime::steady() - cpu })
}

/// A raw rdkafka producer with Herald's producer properties, warmed up with `warm_up`.
pub async fn raw_producer(clients: &Clients, warm_up: Record) -> Result<FutureProducer, crate::Error> {
    let producer: FutureProducer = clients.raw_producer().create()?;
    let fr = FutureRecord { key: warm_up.key.as_deref(), payload: warm_up.payload.as_deref(), ..FutureRecord::<[u8], [u8]>::to(&warm_up.topic) }.headers(warm_up.headers);
    producer.send(fr, Timeout::After(Duration::from_secs(30))).await.map_err(|(e, _)| e)?;
    Ok(producer)
}

/// Sends pre-encoded records with `send_result`, keeping at most [`MAX_IN_FLIGHT`]
/// delivery futures and awaiting each; a full local queue is retried after 5 ms, as
/// Herald does.
pub async fn raw_send(producer: &FutureProducer, records: Vec<Record>, deadline: Duration) -> Result<ProduceRun, crate::Error> {
    raw_send_each(producer, records.into_iter().map(Ok), deadline).await
}

/// How a raw producer encodes each event inside its timed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    /// `serde_avro_fast::to_datum` with its `SerializerConfig` built once: the fastest
    /// encode a user could write.
    Fast,
    /// apache-avro's `to_value` + `to_avro_datum`: the straightforward way.
    Value,
}

/// Like [`raw_send`], but each record is built inside the timed loop, as an application
/// publishing with raw rdkafka would: the CloudEvents headers Herald writes (a fresh
/// UUIDv7 id, the current time, type, source, subject = key, content type, correlation
/// id = id; same names, order and formats, so the records are byte for byte what Herald
/// sends), then the single-object header `frame` (`C3 01` and the writer schema's
/// fingerprint, taken from a record Herald encoded) and the datum encoded as `encode`
/// says; key = the aggregate id. This is the baseline for Herald's publisher, whose time
/// includes the same work.
pub async fn raw_encode_and_send(producer: &FutureProducer, topic: &str, events: &[OrderPlaced], frame: &[u8], encode: Encode, deadline: Duration) -> Result<ProduceRun, crate::Error> {
    let schema = Schema::parse_str(OrderPlaced::SCHEMA)?;
    let fast: serde_avro_fast::Schema = OrderPlaced::SCHEMA.parse()?;
    let mut fast_config = serde_avro_fast::ser::SerializerConfig::new(&fast);
    let records = events.iter().map(move |event| {
        let mut payload = Vec::with_capacity(256);
        payload.extend_from_slice(frame);
        let payload = match encode {
            Encode::Fast => serde_avro_fast::to_datum(event, payload, &mut fast_config)?,
            Encode::Value => {
                payload.extend(apache_avro::to_avro_datum(&schema, apache_avro::to_value(event)?)?);
                payload
            }
        };
        let headers = cloud_event_headers(event);
        Ok(Record::new(topic, event.aggregate_id().as_bytes(), payload, headers))
    });
    raw_send_each(producer, records, deadline).await
}

/// The CloudEvents headers Herald writes for a fresh `event`, built the fast way by hand.
pub fn cloud_event_headers(event: &OrderPlaced) -> OwnedHeaders {
    let id = uuid::Uuid::now_v7();
    let mut id_text = uuid::Uuid::encode_buffer();
    let id_text = id.hyphenated().encode_lower(&mut id_text);
    let mut time = [0u8; 27];
    let time = rfc3339_micros(chrono::Utc::now(), &mut time);
    fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
        Header { key, value: Some(value.as_bytes()) }
    }
    OwnedHeaders::new_with_capacity(8)
        .insert(header("ce_specversion", "1.0"))
        .insert(header("ce_id", id_text))
        .insert(header("ce_type", <OrderPlaced as Event>::TYPE))
        .insert(header("ce_source", "/herald/bench"))
        .insert(header("ce_time", time))
        .insert(header("ce_subject", event.aggregate_id()))
        .insert(header("content-type", "application/avro"))
        .insert(header("ce_correlationid", id_text))
}

/// `2024-05-01T12:34:56.123456Z` (RFC 3339, UTC, microseconds) into `out`, without
/// allocating: what a user who cares about speed writes instead of chrono's formatter.
fn rfc3339_micros(t: chrono::DateTime<chrono::Utc>, out: &mut [u8; 27]) -> &str {
    use chrono::{Datelike, Timelike};
    fn put(out: &mut [u8], mut v: u32) {
        for d in out.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    *out = *b"0000-00-00T00:00:00.000000Z";
    put(&mut out[0..4], t.year().clamp(0, 9999) as u32);
    put(&mut out[5..7], t.month());
    put(&mut out[8..10], t.day());
    put(&mut out[11..13], t.hour());
    put(&mut out[14..16], t.minute());
    put(&mut out[17..19], t.second().min(59));
    put(&mut out[20..26], (t.nanosecond() % 1_000_000_000) / 1_000);
    std::str::from_utf8(out).unwrap_or_default()
}

async fn raw_send_each(
    producer: &FutureProducer,
    records: impl ExactSizeIterator<Item = Result<Record, crate::Error>>,
    deadline: Duration,
) -> Result<ProduceRun, crate::Error> {
    let events = records.len();
    let (started, cpu) = (Instant::now(), CpuTime::steady());
    let run = async {
        let mut in_flight = FuturesUnordered::new();
        let mut failed = 0usize;
        for record in records {
            let record = record?;
            if in_flight.len() >= MAX_IN_FLIGHT
                && let Some(delivery) = in_flight.next().await
            {
                failed += usize::from(!matches!(delivery, Ok(Ok(_))));
            }
            let mut headers = record.headers;
            loop {
                let fr = FutureRecord { key: record.key.as_deref(), payload: record.payload.as_deref(), ..FutureRecord::<[u8], [u8]>::to(&record.topic) }.headers(headers);
                match producer.send_result(fr) {
                    Ok(delivery) => {
                        in_flight.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), fr)) => {
                        headers = fr.headers.unwrap_or_default();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(crate::Error::from(e)),
                }
            }
        }
        while let Some(delivery) = in_flight.next().await {
            failed += usize::from(!matches!(delivery, Ok(Ok(_))));
        }
        Ok(failed)
    };
    let failed = tokio::time::timeout(deadline, run).await.map_err(|_| stalled("raw producer", producer, deadline))??;
    Ok(ProduceRun { events, failed, elapsed: started.elapsed(), cpu: CpuTime::steady() - cpu })
}

fn stalled<C: rdkafka::producer::ProducerContext>(what: &str, producer: &impl Producer<C>, deadline: Duration) -> crate::Error {
    format!(
        "{what} did not finish within {deadline:?}; librdkafka still holds {} records (0 means every delivery report had arrived)",
        producer.in_flight_count()
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn hand_built_headers_are_heralds() {
        let event = crate::workload::order(7, 10);
        let herald = herald_bus::Publisher::new(&herald_bus::KafkaConfig::new("127.0.0.1:1"), herald_bus::PublisherOptions::new("/herald/bench")).expect("publisher").metadata_for(&event).to_headers();
        let raw = cloud_event_headers(&event);
        let pairs = |h: &OwnedHeaders| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect::<Vec<_>>();
        let (herald, raw) = (pairs(&herald), pairs(&raw));
        assert_eq!(herald.iter().map(|h| &h.0).collect::<Vec<_>>(), raw.iter().map(|h| &h.0).collect::<Vec<_>>());
        for ((name, h), (_, r)) in herald.iter().zip(&raw) {
            let (h, r) = (h.as_deref().expect("value"), r.as_deref().expect("value"));
            match name.as_str() {
                // Fresh per event: same shape, other value.
                "ce_id" | "ce_correlationid" | "ce_time" => assert_eq!(h.len(), r.len(), "{name}"),
                _ => assert_eq!(h, r, "{name}"),
            }
        }
    }

    #[test]
    fn rfc3339_micros_writes_what_chrono_writes() {
        let t = chrono::DateTime::from_timestamp_micros(1_714_566_896_123_456).expect("time");
        let mut out = [0u8; 27];
        assert_eq!(rfc3339_micros(t, &mut out), t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    }
}
