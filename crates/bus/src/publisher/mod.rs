//! Publishing events: typed, Avro-encoded, keyed by aggregate, awaited until the broker
//! acknowledged them.
//!
//! # Layout
//! - [`Publisher`] (here): publish, encode, send, flush, reset.
//! - [`PublisherOptions`] and [`PRODUCER_DEFAULTS`] (`options.rs`).
//! - [`Record`] (`record.rs`): one record ready to send; [`encode_datum`].
//! - [`PublishError`] (`error.rs`), [`Published`] (`published.rs`).
//! - `producer.rs`: the rdkafka producer and its delivery reports; `slot.rs`: the current
//!   producer and its replacement; `fatal.rs`: a producer's fatal error; `in_flight.rs`:
//!   the bound on unacknowledged sends; `metrics_cache.rs`.
//!
//! # After a fatal producer error
//! An idempotent producer can fail fatally (librdkafka gives up on it when it cannot keep
//! its sequence numbers, for example after `OUT_OF_ORDER_SEQUENCE_NUMBER`). librdkafka
//! then purges the records still queued and refuses new ones. The publisher does not hide
//! this: every such send, and every later one, fails with [`PublishError::Fatal`], which
//! hands the record back. It stays so until [`Publisher::reset`]. The caller collects its
//! outstanding results, calls `reset`, and republishes the failed records in their order
//! with their event ids; then per-key order holds and consumers dedupe the records that
//! may have been written twice. (A service that cannot do this should treat `Fatal` as a
//! reason to stop and restart: its unacknowledged events are then published again by
//! whatever produced them, an outbox or the consumer that has not committed them.)

mod delivery;
mod error;
mod fatal;
mod in_flight;
mod metrics_cache;
mod options;
mod producer;
mod published;
mod record;
mod slot;

pub use delivery::Delivery;
pub use error::PublishError;
pub use options::{max_message_bytes, weakened, PublisherOptions, PRODUCER_DEFAULTS};
pub use producer::{DeliveryContext, Pending, Producer};
pub use published::Published;
pub use record::{datum_by_value, encode_datum, write_datum, Record};

use slot::ProducerSlot;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::util::Timeout;

use crate::codec::{Codec, SingleObject};
use crate::event::{Event, Member};
use crate::schema::KnownSchema;
use crate::trace::TraceContext;
use crate::{EventFamily, KafkaConfig, Metadata, Topic};
use record::owned_message;

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
    /// A publisher with single-object encoding (no registry needed). An empty
    /// [`PublisherOptions::source`] is refused: CloudEvents requires a source on every event.
    ///
    /// ```
    /// use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
    /// let config = KafkaConfig::new("127.0.0.1:9092");
    /// assert!(Publisher::new(&config, PublisherOptions::new("")).is_err());
    /// assert!(Publisher::new(&config, PublisherOptions::new("/shop/checkout")).is_ok());
    /// ```
    pub fn new(config: &KafkaConfig, options: PublisherOptions) -> Result<Self, PublishError> {
        Self::with_codec(config, options, Arc::new(SingleObject::new(Default::default())))
    }

    /// A publisher with another payload codec.
    pub fn with_codec(config: &KafkaConfig, options: PublisherOptions, codec: Arc<dyn Codec>) -> Result<Self, PublishError> {
        if options.source.is_empty() {
            // CloudEvents requires a non-empty `source` on every event.
            return Err(PublishError::Client(rdkafka::error::KafkaError::ClientCreation("the CloudEvents source (PublisherOptions::source) is empty; give a URI-reference such as /shop/checkout".into())));
        }
        let client_config = config.client_config(PRODUCER_DEFAULTS);
        if let Some(refused) = options::weakened(&client_config) {
            return Err(PublishError::Client(rdkafka::error::KafkaError::ClientCreation(refused)));
        }
        let max_bytes = client_config.get("message.max.bytes").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        let producer = Arc::new(ProducerSlot::new(client_config).map_err(PublishError::Client)?);
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
        let (id, record) = self.encode_fresh(topic, event).await?;
        let (partition, offset) = self.send_record(record).await?;
        Ok(Published { id, partition, offset })
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
    /// order: once one cannot be sent (it does not encode, it is too large), the later
    /// events of its aggregate are not sent either ([`PublishError::EarlierFailed`]), so
    /// republishing the failed one and those after it keeps the aggregate in order.
    ///
    /// That holds for refusals before sending. A *delivery* that fails (the broker away
    /// for longer than `message.timeout.ms`, 300 s by default) cannot hold back the later
    /// events of its aggregate already queued: librdkafka times each record out on its
    /// own, and a later one may still be written. Its result is `Ok`, and republishing
    /// the failed one puts it after. Where an aggregate's order must survive any outage,
    /// publish its next event only once the previous one is acknowledged
    /// ([`Publisher::publish`], awaited), retrying a failure before going on.
    pub async fn publish_all<'a, F, E, I>(&self, topic: &Topic<F>, events: I) -> Vec<Result<Published, PublishError>>
    where
        F: EventFamily + Member<E>,
        E: Event,
        I: IntoIterator<Item = &'a E>,
    {
        // Deliveries are collected as they come, each looked at without waiting
        // (`Delivery::try_take`: no waker, none of the task's cooperative budget): a
        // delivery frees its in-flight place in librdkafka's callback whether or not its
        // future was polled, so the bound holds, and an acknowledgement does not wake this
        // task while it queues (a task wake-up per record cost more than the rest of the
        // bookkeeping). After each send the oldest deliveries are taken until one is not
        // acknowledged yet, which goes to the back: a slow partition does not hold up
        // collecting the others, and what waits stays about the in-flight bound.
        let events = events.into_iter();
        let mut results: Vec<Option<Result<Published, PublishError>>> = Vec::with_capacity(events.size_hint().0);
        let mut waiting: VecDeque<(usize, uuid::Uuid, Delivery)> = VecDeque::new();
        // Aggregates with an event that could not be sent: their later events wait.
        let mut failed: HashSet<&str> = HashSet::new();
        for (index, event) in events.enumerate() {
            if !failed.is_empty() && failed.contains(event.aggregate_id()) {
                results.push(Some(Err(PublishError::EarlierFailed { aggregate_id: event.aggregate_id().to_owned() })));
                continue;
            }
            let sent = match self.encode_fresh(topic, event).await {
                Ok((id, record)) => self.enqueue(record).await.map(|delivery| (id, delivery)),
                Err(e) => Err(e),
            };
            match sent {
                Ok((id, delivery)) => {
                    results.push(None);
                    waiting.push_back((index, id, delivery));
                }
                Err(e) => {
                    failed.insert(event.aggregate_id());
                    results.push(Some(Err(e)));
                }
            }
            while let Some((index, id, mut delivery)) = waiting.pop_front() {
                match delivery.try_take() {
                    Some(done) => results[index] = Some(done.map(|(partition, offset)| Published { id, partition, offset })),
                    None => {
                        waiting.push_back((index, id, delivery));
                        break;
                    }
                }
            }
        }
        for (index, id, delivery) in waiting {
            results[index] = Some(delivery.await.map(|(partition, offset)| Published { id, partition, offset }));
        }
        // Every event got its result above: queued ones from their delivery, the others
        // from their error.
        results.into_iter().map(|r| r.expect("one result per event")).collect()
    }

    /// Encodes an event and its metadata into a record, without sending it.
    ///
    /// `meta.event_type` must be the event's type ([`Event::TYPE`], its schema's full name):
    /// consumers dead-letter a record whose `ce_type` says otherwise than its payload.
    pub async fn encode<F, E>(&self, topic: &Topic<F>, event: &E, meta: &Metadata) -> Result<Record, PublishError>
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        if meta.event_type != E::TYPE {
            return Err(PublishError::Encode { event_type: E::TYPE.to_owned(), reason: format!("the metadata's type {:?} is not the event's (ce_type is its schema's full name)", meta.event_type) });
        }
        self.encode_with(topic, event, meta.to_headers()).await
    }

    /// [`Publisher::encode`] with fresh metadata ([`Publisher::metadata_for`]), its headers
    /// written without building a [`Metadata`] first: the event id and the record.
    async fn encode_fresh<F, E>(&self, topic: &Topic<F>, event: &E) -> Result<(uuid::Uuid, Record), PublishError>
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        let trace = TraceContext::current().map(|t| t.child());
        let (id, headers) = Metadata::fresh_headers(E::TYPE, &self.source, event.aggregate_id(), trace);
        Ok((id, self.encode_with(topic, event, headers).await?))
    }

    async fn encode_with<F, E>(&self, topic: &Topic<F>, event: &E, headers: rdkafka::message::OwnedHeaders) -> Result<Record, PublishError>
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        let known = F::schemas().latest(E::TYPE).ok_or_else(|| PublishError::UnknownSchema(E::TYPE.to_owned()))?;
        let mut payload = Vec::with_capacity(256);
        match self.codec.write_header_now(topic.name(), known, &mut payload) {
            Some(written) => written?,
            None => self.codec.write_header(topic.name(), known, &mut payload).await?,
        }
        encode_datum(known, event, &mut payload)?;
        Ok(Record::new(topic.name(), event.aggregate_id().as_bytes(), payload, headers))
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
    /// `enqueue` before the next one to keep order, and collect the deliveries later. A
    /// delivery that fails (timed out after `message.timeout.ms`) does not stop later
    /// records of the same key already queued (see [`Publisher::publish_all`]).
    ///
    /// Refuses oversize records before queueing; waits (does not spin) while the client's
    /// queue is full. After a fatal producer error, refuses every record with
    /// [`PublishError::Fatal`] until [`Publisher::reset`] (see the [module docs](self)).
    pub async fn enqueue(
        &self,
        record: Record,
    ) -> Result<Delivery, PublishError> {
        let size = record.size();
        if size > self.max_bytes {
            return Err(PublishError::Oversize { size, limit: self.max_bytes });
        }
        let slot_in_flight = self.in_flight.acquire().await;
        let started = Instant::now();
        let producer = self.producer.current();
        let fatal = producer.context().fatal.clone();
        let Record { topic, key, payload, mut headers, partition } = record;
        if let Some(reason) = fatal.get() {
            let record = owned_message(&topic, key.as_deref(), payload.as_deref(), Some(headers));
            return Err(PublishError::Fatal { topic, reason: reason.to_owned(), possibly_persisted: false, record: Box::new(record) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let metrics = self.metrics.for_topic(&topic);
        let mut pending = Box::new(Pending { tx, _slot: slot_in_flight, started, metrics });
        loop {
            let base = BaseRecord { key: key.as_deref(), payload: payload.as_deref(), partition, ..BaseRecord::<[u8], [u8], _>::with_opaque_to(&topic, pending) }.headers(headers);
            match producer.send(base) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), base)) => {
                    // The client's queue is full: wait for a delivery report to free space.
                    (pending, headers) = (base.delivery_opaque, base.headers.unwrap_or_default());
                    let _ = tokio::time::timeout(Duration::from_millis(10), self.producer.space.notified()).await;
                }
                Err((source, base)) => {
                    let record = Box::new(owned_message(&topic, key.as_deref(), payload.as_deref(), base.headers));
                    return Err(match fatal.check(&producer) {
                        Some(reason) => PublishError::Fatal { topic, reason: reason.to_owned(), possibly_persisted: false, record },
                        None => PublishError::Delivery { topic, source: Box::new(source), client_error: None, record },
                    });
                }
            }
        }
        Ok(Delivery::new(rx, topic, started, &producer, self.producer.last_error.clone()))
    }

    /// Waits until every queued record is delivered, or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.current();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }

    /// The fatal error the producer hit, if any: while this is `Some`, every send fails
    /// with [`PublishError::Fatal`] until [`Publisher::reset`]. Health checks report it.
    pub fn fatal_error(&self) -> Option<String> {
        let producer = self.producer.current();
        producer.context().fatal.check(&producer).map(str::to_owned)
    }

    /// Replaces a producer that hit a fatal error with a new one; does nothing (returns
    /// `Ok(false)`) when the producer is healthy.
    ///
    /// Before the new producer takes over, every record of the old one gets its outcome:
    /// records in flight get the broker's answer (waited for up to `drain`), the rest are
    /// purged, and each of their sends fails with [`PublishError::Fatal`] carrying its
    /// record. So when `reset` returns, nothing of the old producer can still land after
    /// what is sent next. The caller then republishes the failed records, in their
    /// original order and with their event ids, before newer ones. Shared by all clones.
    ///
    /// ```no_run
    /// # async fn run(publisher: herald_bus::Publisher, record: herald_bus::publisher::Record) -> Result<(), herald_bus::PublishError> {
    /// match publisher.send_record(record).await {
    ///     Err(e) if e.is_fatal() => {
    ///         let record = e.into_record().expect("a fatal send hands the record back");
    ///         publisher.reset(std::time::Duration::from_secs(30)).await?;
    ///         publisher.send_record(record).await?;
    ///     }
    ///     other => { other?; }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn reset(&self, drain: Duration) -> Result<bool, PublishError> {
        self.producer.reset(drain).await.map_err(PublishError::Client)
    }

    /// The underlying rdkafka producer, for what Herald does not wrap. [`Publisher::reset`]
    /// replaces it, so do not keep the returned handle.
    pub fn producer(&self) -> Arc<Producer> {
        self.producer.current()
    }
}
