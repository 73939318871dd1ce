//! Publishing events: typed, Avro-encoded, keyed by aggregate, awaited until the broker
//! acknowledged them.

mod in_flight;
mod metrics_cache;
mod producer;

pub use producer::{DeliveryContext, Pending, Producer};
use producer::ProducerSlot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::util::Timeout;
use uuid::Uuid;

use crate::codec::{Codec, SingleObject};
use crate::event::{Event, Member};
use crate::schema::KnownSchema;
use crate::trace::TraceContext;
use crate::{EventFamily, KafkaConfig, Metadata, Topic};

/// Producer properties Herald sets unless the configuration overrides them.
///
/// Idempotence and `acks=all` make a retried send land once; `murmur2_random` routes keys
/// to the same partitions as the Java client; `message.timeout.ms` is long so transient
/// broker trouble is retried inside librdkafka instead of failing deliveries; the queue is
/// bounded at 64 MiB instead of librdkafka's 1 GiB.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("partitioner", "murmur2_random"),
    ("message.timeout.ms", "300000"),
    ("queue.buffering.max.kbytes", "65536"),
    ("linger.ms", "5"),
];

/// Settings of a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// The CloudEvents `source` of events this process publishes, for example `/shop/checkout`.
    pub source: String,
    /// Sends awaiting delivery at once, per publisher (default 10 000). Further sends wait.
    pub max_in_flight: usize,
}

impl PublisherOptions {
    /// Options with the given source and default limits.
    pub fn new(source: impl Into<String>) -> Self {
        PublisherOptions { source: source.into(), max_in_flight: 10_000 }
    }
}

/// Where a published event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The event id (`ce_id`).
    pub id: Uuid,
    /// Partition it was written to.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// A publish that failed. Every variant says whether retrying can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The producer could not be created (bad configuration).
    #[error("cannot create producer: {0}")]
    Client(#[source] KafkaError),
    /// The event's schema is not known to the codec.
    #[error("no schema for event type {0}")]
    UnknownSchema(String),
    /// The event does not fit its schema.
    #[error("cannot encode {event_type}: {reason}")]
    Encode {
        /// The event type.
        event_type: String,
        /// What the encoder said.
        reason: String,
    },
    /// The encoded record is larger than `message.max.bytes`; it was not sent.
    #[error("record of {size} bytes exceeds message.max.bytes = {limit}; not sent")]
    Oversize {
        /// Record size (key + value + headers).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The broker did not acknowledge the record. The record is handed back unchanged.
    #[error("delivery to {topic} failed: {source}{}", client_error.as_deref().map(|e| format!(" (last client error: {e})")).unwrap_or_default())]
    Delivery {
        /// The topic.
        topic: String,
        /// The client's error (boxed: it is large, and every publish returns this type).
        #[source]
        source: Box<KafkaError>,
        /// The client's last error while the record waited, if any: why a record timed
        /// out (a failed SASL authentication, a TLS handshake, an unreachable broker).
        client_error: Option<String>,
        /// The record that was not acknowledged.
        record: Box<rdkafka::message::OwnedMessage>,
    },
    /// The codec could not frame the payload (for example the schema registry is down).
    #[error("cannot frame payload: {0}")]
    Codec(String),
}

impl PublishError {
    /// True when sending the same record again may succeed. (A fatal producer error is
    /// retryable: the publisher replaces its producer.)
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Delivery { source, .. } => !matches!(
                source.rdkafka_error_code(),
                Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord)
            ),
            PublishError::Codec(_) => true,
            _ => false,
        }
    }

    /// True when the record may have been written although the delivery failed (a timeout
    /// after sending). Republish it with the same event id; consumers dedupe on `ce_id`.
    pub fn possibly_persisted(&self) -> bool {
        matches!(self, PublishError::Delivery { source, .. }
            if matches!(source.rdkafka_error_code(), Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut)))
    }
}

/// One record ready to send: what [`Publisher::send_record`] takes.
#[derive(Debug, Clone)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Kafka key (the aggregate id as UTF-8 bytes).
    pub key: Vec<u8>,
    /// Framed payload.
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: OwnedHeaders,
}

/// Publishes events to Kafka.
///
/// Cloning is cheap and shares one producer. Call [`Publisher::flush`] before dropping the
/// last clone: dropping a producer purges what it has not delivered yet.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
/// let publisher = Publisher::new(&KafkaConfig::new("127.0.0.1:9092"), PublisherOptions::new("/shop/checkout"))?;
/// // publisher.publish(&ORDERS, &order_placed).await?;
/// publisher.flush(std::time::Duration::from_secs(10)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<ProducerSlot>,
    codec: Arc<dyn Codec>,
    source: Arc<str>,
    in_flight: Arc<in_flight::InFlight>,
    max_bytes: usize,
    metrics: Arc<metrics_cache::PublishMetrics>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("source", &self.source).field("codec", &self.codec).finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher with single-object encoding (no registry needed).
    pub fn new(config: &KafkaConfig, options: PublisherOptions) -> Result<Self, PublishError> {
        Self::with_codec(config, options, Arc::new(SingleObject::new(Default::default())))
    }

    /// A publisher with another payload codec.
    pub fn with_codec(config: &KafkaConfig, options: PublisherOptions, codec: Arc<dyn Codec>) -> Result<Self, PublishError> {
        let producer = Arc::new(ProducerSlot::new(config.client_config(PRODUCER_DEFAULTS)).map_err(PublishError::Client)?);
        let max_bytes = config.get("message.max.bytes").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        Ok(Publisher {
            producer,
            codec,
            source: options.source.into(),
            in_flight: in_flight::InFlight::new(options.max_in_flight),
            metrics: Arc::default(),
            max_bytes,
        })
    }

    /// The CloudEvents source of this publisher.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Publishes `event` on `topic` and waits until the broker acknowledged it.
    ///
    /// The key is the event's aggregate id; metadata is fresh ([`Metadata::new`]), joined
    /// to the current trace when called from a handler. Cancellation: dropping the future
    /// after the record was queued does not unsend it.
    pub async fn publish<F, E>(&self, topic: &Topic<F>, event: &E) -> Result<Published, PublishError>
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        let meta = self.metadata_for(event);
        self.publish_with(topic, event, meta).await
    }

    /// Fresh metadata for `event` from this publisher: new id, now, subject = aggregate id,
    /// a child of the current trace if any.
    pub fn metadata_for<E: Event>(&self, event: &E) -> Metadata {
        let mut meta = Metadata::new(E::TYPE, &*self.source, event.aggregate_id());
        meta.trace = TraceContext::current().map(|t| t.child());
        meta
    }

    /// Publishes `event` with the given metadata (for example [`Metadata::caused_by`] an
    /// incoming event).
    pub async fn publish_with<F, E>(&self, topic: &Topic<F>, event: &E, meta: Metadata) -> Result<Published, PublishError>
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        let record = self.encode(topic, event, &meta).await?;
        let (partition, offset) = self.send_record(record).await?;
        Ok(Published { id: meta.id, partition, offset })
    }

    /// Publishes many events, keeping at most `max_in_flight` unacknowledged, and returns
    /// one result per event in input order. Events with the same aggregate id keep their
    /// order.
    pub async fn publish_all<'a, F, E, I>(&self, topic: &Topic<F>, events: I) -> Vec<Result<Published, PublishError>>
    where
        F: EventFamily + Member<E>,
        E: Event,
        I: IntoIterator<Item = &'a E>,
    {
        // Deliveries complete out of input order (partitions are acknowledged separately);
        // each result goes straight to its event's slot.
        let events = events.into_iter();
        let mut results: Vec<Option<Result<Published, PublishError>>> = Vec::with_capacity(events.size_hint().0);
        let mut pending = FuturesUnordered::new();
        for (index, event) in events.enumerate() {
            results.push(None);
            let meta = self.metadata_for(event);
            let id = meta.id;
            let queued = match self.encode(topic, event, &meta).await {
                Ok(record) => self.enqueue(record).await,
                Err(e) => Err(e),
            };
            match queued {
                Ok(delivery) => pending.push(async move { (index, delivery.await.map(|(partition, offset)| Published { id, partition, offset })) }),
                Err(e) => results[index] = Some(Err(e)),
            }
            // Collect finished deliveries as we go.
            while let Some(Some((index, done))) = futures::FutureExt::now_or_never(pending.next()) {
                results[index] = Some(done);
            }
        }
        while let Some((index, done)) = pending.next().await {
            results[index] = Some(done);
        }
        // Every event got its result above: queued ones from their delivery, the others
        // from their error.
        results.into_iter().map(|r| r.expect("one result per event")).collect()
    }

    /// Encodes an event and its metadata into a record, without sending it.
    pub async fn encode<F, E>(&self, topic: &Topic<F>, event: &E, meta: &Metadata) -> Result<Record, PublishError>
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        let known = F::schemas().latest(E::TYPE).ok_or_else(|| PublishError::UnknownSchema(E::TYPE.to_owned()))?;
        let mut payload = Vec::with_capacity(256);
        self.codec.write_header(topic.name(), known, &mut payload).await?;
        encode_datum(known, event, &mut payload)?;
        Ok(Record {
            topic: topic.name().to_owned(),
            key: event.aggregate_id().as_bytes().to_vec(),
            payload,
            headers: meta.to_headers(),
        })
    }

    /// Frames an already encoded Avro datum with this publisher's codec.
    pub async fn frame(&self, topic: &str, schema: &KnownSchema, datum: &[u8]) -> Result<Vec<u8>, PublishError> {
        let mut payload = Vec::with_capacity(datum.len() + 16);
        self.codec.write_header(topic, schema, &mut payload).await?;
        payload.extend_from_slice(datum);
        Ok(payload)
    }

    /// Sends a prepared record and waits for its acknowledgement: `(partition, offset)`.
    pub async fn send_record(&self, record: Record) -> Result<(i32, i64), PublishError> {
        self.enqueue(record).await?.await
    }

    /// Queues a record, waiting for an in-flight slot, and returns a future that resolves
    /// when the broker acknowledged it. Records are queued in call order: await each
    /// `enqueue` before the next one to keep order, and collect the deliveries later.
    ///
    /// Refuses oversize records before queueing; waits (does not spin) while the client's
    /// queue is full.
    pub async fn enqueue(
        &self,
        record: Record,
    ) -> Result<impl std::future::Future<Output = Result<(i32, i64), PublishError>> + use<>, PublishError> {
        let size = record.key.len() + record.payload.len() + headers_size(&record.headers);
        if size > self.max_bytes {
            return Err(PublishError::Oversize { size, limit: self.max_bytes });
        }
        let slot_in_flight = self.in_flight.acquire().await;
        let started = Instant::now();
        let producer = self.producer.current();
        let slot = self.producer.clone();
        let Record { topic, key, payload, mut headers } = record;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut pending = Box::new(Pending { tx, _slot: slot_in_flight });
        loop {
            let base = BaseRecord::with_opaque_to(&topic, pending).key(&key).payload(&payload).headers(headers);
            match producer.send(base) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), base)) => {
                    // The client's queue is full: wait for a delivery report to free space.
                    (pending, headers) = (base.delivery_opaque, base.headers.unwrap_or_default());
                    let _ = tokio::time::timeout(Duration::from_millis(10), slot.space.notified()).await;
                }
                Err((source, base)) => {
                    let record = owned_message(&topic, Some(&key), Some(&payload), base.headers);
                    slot.replace_if_fatal(&producer);
                    return Err(PublishError::Delivery { topic, source: Box::new(source), client_error: None, record: Box::new(record) });
                }
            }
        }
        let metrics = self.metrics.for_topic(&topic);
        Ok(async move {
            let result = rx.await;
            metrics.seconds.record(started.elapsed().as_secs_f64());
            match result {
                Ok(Ok(delivered)) => {
                    metrics.published.increment(1);
                    Ok(delivered)
                }
                Ok(Err((source, record))) => {
                    metrics.failures.increment(1);
                    slot.replace_if_fatal(&producer);
                    // An error from up to a minute before the record was queued still
                    // explains it: librdkafka keeps failing the same way while it retries.
                    let client_error = slot.last_error.since(started.checked_sub(Duration::from_secs(60)).unwrap_or(started));
                    Err(PublishError::Delivery { topic, source: Box::new(source), client_error, record: Box::new(record) })
                }
                // The producer was dropped before reporting (purged).
                Err(_) => Err(PublishError::Delivery {
                    topic: topic.clone(),
                    source: Box::new(KafkaError::Canceled),
                    client_error: None,
                    record: Box::new(owned_message(&topic, None, None, None)),
                }),
            }
        })
    }

    /// Waits until every queued record is delivered, or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.current();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }

    /// The underlying rdkafka producer, for what Herald does not wrap. After a fatal
    /// error Herald replaces it, so do not keep the returned handle.
    pub fn producer(&self) -> Arc<Producer> {
        self.producer.current()
    }
}

/// Encodes `event` as an Avro binary datum with `schema`, appending to `out`.
pub fn encode_datum<E: serde::Serialize>(schema: &KnownSchema, event: &E, out: &mut Vec<u8>) -> Result<(), PublishError> {
    apache_avro::write_avro_datum_ref(&schema.schema, event, out)
        .map(|_| ())
        .map_err(|e| PublishError::Encode { event_type: schema.name.clone(), reason: e.to_string() })
}

fn headers_size(headers: &OwnedHeaders) -> usize {
    use rdkafka::message::Headers;
    headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 8).sum()
}

fn owned_message(topic: &str, key: Option<&Vec<u8>>, payload: Option<&Vec<u8>>, headers: Option<OwnedHeaders>) -> rdkafka::message::OwnedMessage {
    rdkafka::message::OwnedMessage::new(
        payload.cloned(),
        key.cloned(),
        topic.to_owned(),
        rdkafka::Timestamp::NotAvailable,
        -1,
        -1,
        headers,
    )
}
