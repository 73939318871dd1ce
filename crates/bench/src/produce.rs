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
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::broker::Clients;

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
}

impl ProduceRun {
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
    let started = Instant::now();
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
    let elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    Ok(ProduceRun { events: events.len(), failed, elapsed })
}

/// Herald's `publish`, one call per event, at most [`MAX_IN_FLIGHT`] calls at once
/// (`buffer_unordered`): how an application publishing from many tasks drives it.
pub async fn herald_publish_loop(publisher: &Publisher, topic: &Topic<OrderEvent>, events: &[OrderPlaced], deadline: Duration) -> Result<ProduceRun, crate::Error> {
    let started = Instant::now();
    let run = futures::stream::iter(events)
        .map(|event| publisher.publish(topic, event))
        .buffer_unordered(MAX_IN_FLIGHT)
        .fold(0usize, |failed, result| async move { failed + usize::from(result.is_err()) });
    let failed = tokio::time::timeout(deadline, run)
        .await
        .map_err(|_| stalled("Herald publish loop", &*publisher.producer(), deadline))?;
    Ok(ProduceRun { events: events.len(), failed, elapsed: started.elapsed() })
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

/// Like [`raw_send`], but each event is encoded inside the timed loop as `encode` says:
/// the single-object header `frame` (`C3 01` and the writer schema's fingerprint, taken
/// from a record Herald encoded), then the datum; key = the aggregate id. Its headers
/// were built beforehand (`headers`, one per event, from [`Workload::encode_all`]), so the
/// records are byte for byte what Herald sends, and only the Avro work is timed, as the
/// raw consumer's decoding is. This is the like-for-like baseline for Herald's publisher,
/// whose time includes encoding.
///
/// [`Workload::encode_all`]: crate::workload::Workload::encode_all
pub async fn raw_encode_and_send(
    producer: &FutureProducer,
    topic: &str,
    events: &[OrderPlaced],
    headers: Vec<OwnedHeaders>,
    frame: &[u8],
    encode: Encode,
    deadline: Duration,
) -> Result<ProduceRun, crate::Error> {
    let schema = Schema::parse_str(OrderPlaced::SCHEMA)?;
    let fast: serde_avro_fast::Schema = OrderPlaced::SCHEMA.parse()?;
    let mut fast_config = serde_avro_fast::ser::SerializerConfig::new(&fast);
    let records = events.iter().zip(headers).map(move |(event, headers)| {
        let mut payload = Vec::with_capacity(256);
        payload.extend_from_slice(frame);
        let payload = match encode {
            Encode::Fast => serde_avro_fast::to_datum(event, payload, &mut fast_config)?,
            Encode::Value => {
                payload.extend(apache_avro::to_avro_datum(&schema, apache_avro::to_value(event)?)?);
                payload
            }
        };
        Ok(Record::new(topic, event.aggregate_id().as_bytes(), payload, headers))
    });
    raw_send_each(producer, records, deadline).await
}

async fn raw_send_each(
    producer: &FutureProducer,
    records: impl ExactSizeIterator<Item = Result<Record, crate::Error>>,
    deadline: Duration,
) -> Result<ProduceRun, crate::Error> {
    let events = records.len();
    let started = Instant::now();
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
    Ok(ProduceRun { events, failed, elapsed: started.elapsed() })
}

fn stalled<C: rdkafka::producer::ProducerContext>(what: &str, producer: &impl Producer<C>, deadline: Duration) -> crate::Error {
    format!(
        "{what} did not finish within {deadline:?}; librdkafka still holds {} records (0 means every delivery report had arrived)",
        producer.in_flight_count()
    )
    .into()
}
