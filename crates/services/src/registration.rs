//! Registering a running process: the record, the heartbeats, the tombstone.

use std::time::Duration;

use herald_bus::KafkaConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::instance::now_ms;
use crate::{Instance, RegistryError, Settings};

/// A registered instance. Heartbeats run on a task until [`Registration::shutdown`]
/// deregisters it with a tombstone.
///
/// Dropping a registration without `shutdown` stops the heartbeats but writes nothing, as a
/// crash would: directories count the instance as expired once its last heartbeat is older
/// than the TTL. Shutdown is a protocol, not `Drop` (a tombstone needs the broker's ack).
///
/// A heartbeat that is not acknowledged within `settings.ack_timeout`, or any that fails
/// once the producer has had a fatal error (an idempotent producer's, after which it
/// refuses every record), replaces the registration's producer (its queued heartbeats are
/// purged, they are stale; shutdown waits until it is closed before writing the
/// tombstone), and the new one sends the next heartbeat at once rather than an interval
/// later: librdkafka's producer sometimes stays stuck after a broker restart, its
/// partition's leader unknown while the broker answers (librdkafka #4976; a test run here
/// saw it), and only a new producer writes again. During a real outage the new producer
/// waits like the old one, so producers are replaced at most once per `ack_timeout` (after
/// a fatal error, once per interval). A record refused outright (authorization, size)
/// keeps the producer.
///
/// ```no_run
/// # async fn demo() -> Result<(), herald_services::RegistryError> {
/// use herald_bus::KafkaConfig;
/// use herald_services::{Instance, Registration, Settings};
/// let config = KafkaConfig::new("127.0.0.1:9092");
/// let me = Instance::new("orders", "orders-1", "http://127.0.0.1:8080", env!("CARGO_PKG_VERSION"))?;
/// let registration = Registration::register(&config, &Settings::default(), me).await?;
/// // ... serve ...
/// registration.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Registration {
    config: KafkaConfig,
    topic: String,
    key: String,
    ack_timeout: Duration,
    stop: CancellationToken,
    /// The heartbeats, which hand back the producer in use when stopped (dropped, the
    /// task closes it off the tokio workers).
    heartbeats: Option<JoinHandle<OffWorker>>,
}

impl Registration {
    /// Creates the registry topic if missing, publishes `instance` as given, its
    /// `heartbeat_at_ms` included (waiting for the broker's acknowledgement, so directories
    /// can see it once this returns), and starts heartbeats every `settings.heartbeat`,
    /// each stamped with the time it is sent. Must be called inside a tokio runtime.
    ///
    /// Cancellation-safe: dropping the future before it returns leaves at most one record
    /// that expires after the TTL.
    ///
    /// Errors: [`RegistryError::InvalidSettings`] (before anything is sent) for settings
    /// [`Settings::validate`] refuses, such as a zero heartbeat interval.
    pub async fn register(config: &KafkaConfig, settings: &Settings, instance: Instance) -> Result<Self, RegistryError> {
        settings.validate()?;
        crate::topic::ensure_topic(config, &settings.topic).await?;
        // Closed on a blocking thread if this future is dropped before it returns (a
        // caller's timeout): closing waits on librdkafka's threads.
        let producer = OffWorker(Some(new_producer(config)?));
        let key = instance.key();
        send(producer.get(), &settings.topic, &key, Some(&instance.encode()), settings.ack_timeout).await?;
        let stop = CancellationToken::new();
        let heartbeats = tokio::spawn(heartbeat(config.clone(), producer, settings.clone(), instance, stop.clone()));
        Ok(Registration { config: config.clone(), topic: settings.topic.clone(), key, ack_timeout: settings.ack_timeout, stop, heartbeats: Some(heartbeats) })
    }

    /// The record key, `service/instance`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Deregisters: stops the heartbeats, then writes a tombstone and waits for its
    /// acknowledgement. On error the instance still expires after the TTL.
    pub async fn shutdown(mut self) -> Result<(), RegistryError> {
        self.stop.cancel();
        // A heartbeat in flight finishes first, and stale producers are closed, so neither
        // can land after the tombstone. (A task that panicked hands back nothing: a new
        // producer writes the tombstone.)
        let producer = match self.heartbeats.take() {
            Some(task) => task.await.ok(),
            None => None,
        };
        // Closed off the workers also when the tombstone fails.
        let producer = match producer {
            Some(producer) => producer,
            None => OffWorker(Some(new_producer(&self.config)?)),
        };
        send(producer.get(), &self.topic, &self.key, None, self.ack_timeout).await?;
        let (producer, timeout) = (producer.take(), self.ack_timeout);
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.heartbeats.take() {
            task.abort();
        }
    }
}

/// Heartbeats until `stop`, then hands back the producer in use. Aborted (a registration
/// dropped without `shutdown`), it closes its producer on a blocking thread.
async fn heartbeat(config: KafkaConfig, mut producer: OffWorker, settings: Settings, mut instance: Instance, stop: CancellationToken) -> OffWorker {
    let key = instance.key();
    let mut ticks = tokio::time::interval(settings.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; registration already published
    // Stale producers being purged and closed: done before the task ends, so shutdown's
    // tombstone (on the producer in use) comes after anything they could still send.
    let mut retiring: Vec<JoinHandle<()>> = Vec::new();
    loop {
        tokio::select! {
            // Stop first: after a replaced producer the next tick is due at once.
            biased;
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        instance.heartbeat_at_ms = now_ms();
        // Not raced with `stop`: a heartbeat is either acknowledged or failed before
        // shutdown writes the tombstone.
        match send(producer.get(), &settings.topic, &key, Some(&instance.encode()), settings.ack_timeout).await {
            Ok(()) => {}
            Err(e) if unacknowledged(&e) || producer.get().client().fatal_error().is_some() => {
                tracing::warn!(key = %key, error = %e, "registry heartbeat not written; replacing the producer and sending again");
                match new_producer(&config) {
                    Ok(fresh) => {
                        let stale = std::mem::replace(&mut producer, OffWorker(Some(fresh))).take();
                        // Purging and closing (its last handle) wait on librdkafka's threads.
                        retiring.retain(|task| !task.is_finished());
                        retiring.push(tokio::task::spawn_blocking(move || stale.purge(PurgeConfig::default().queue().inflight())));
                        // Unacknowledged, the instance has gone a whole `ack_timeout`
                        // without a heartbeat: the next one waits for no interval. (Not after
                        // a fatal error, which can come at once: a new producer of a
                        // principal refused idempotent writes fails at once too.)
                        if unacknowledged(&e) {
                            ticks.reset_immediately();
                        }
                    }
                    Err(e) => tracing::warn!(key = %key, error = %e, "creating the registry's producer; trying again at the next interval"),
                }
            }
            // Refused (authorization, size, a full queue): a new producer would be refused
            // the same way.
            Err(e) => tracing::warn!(key = %key, error = %e, "registry heartbeat failed; retrying at the next interval"),
        }
    }
    for task in retiring {
        let _ = task.await;
    }
    producer
}

/// A producer that, dropped, is closed on a blocking thread when a tokio runtime is at hand
/// (closing joins librdkafka's threads, which must not block a worker).
struct OffWorker(Option<FutureProducer>);

impl OffWorker {
    fn get(&self) -> &FutureProducer {
        self.0.as_ref().expect("taken only by `take`, which consumes the guard")
    }

    fn take(mut self) -> FutureProducer {
        self.0.take().expect("taken only once")
    }
}

impl Drop for OffWorker {
    fn drop(&mut self) {
        if let Some(producer) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(producer))),
                Err(_) => drop(producer),
            }
        }
    }
}

/// Whether a send failed for want of an acknowledgement (the producer may be stuck), not
/// because the broker or the client refused the record.
fn unacknowledged(error: &RegistryError) -> bool {
    match error {
        RegistryError::Timeout(_) => true,
        RegistryError::Kafka(e) => e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::MessageTimedOut),
        _ => false,
    }
}

/// The registration's producer: idempotent, acknowledged by all in-sync replicas.
fn new_producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    config.client_config(&[("acks", "all"), ("enable.idempotence", "true"), ("partitioner", "murmur2_random"), ("linger.ms", "0")]).create()
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, value: Option<&[u8]>, timeout: Duration) -> Result<(), RegistryError> {
    let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    match tokio::time::timeout(timeout, producer.send(record, timeout)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(RegistryError::Kafka(e)),
        Err(_) => Err(RegistryError::Timeout(timeout)),
    }
}
