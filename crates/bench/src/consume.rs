//! Timed consume runs over one pre-filled topic, each in a new consumer group: Herald's
//! `Consumer` with a counting handler; a raw `StreamConsumer` that decodes each record
//! with the fastest Rust Avro (serde_avro_fast, straight into the struct: the baseline a
//! user would write by hand); the same decoding the slower apache-avro `Value` way (for
//! scale); and one that does not decode at all (the transport ceiling).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use herald_bus::{Consumer, Envelope, Event, HandlerError, KafkaConfig, Topic};
use herald_shop::{OrderEvent, OrderPlaced};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::Message;
use tokio::sync::Notify;

use crate::broker::Clients;
use crate::machine::CpuTime;
use crate::workload::FRAME_LEN;

/// The result of one consume run.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeRun {
    /// Records handled.
    pub events: u64,
    /// From creating the consumer to the first record (group join, first fetch).
    pub join: Duration,
    /// From the first record to the last.
    pub steady: Duration,
    /// How often Herald paused a partition because its worker fell behind (0 for raw).
    pub pauses: u64,
    /// CPU seconds of this process from the first record to the last
    /// ([`CpuTime::steady`]).
    pub steady_cpu: f64,
}

impl ConsumeRun {
    /// Records per second after the first one arrived (group join excluded).
    pub fn rate(&self) -> f64 {
        self.events.saturating_sub(1) as f64 / self.steady.as_secs_f64()
    }

    /// CPU per event from the first record to the last, in µs.
    pub fn steady_cpu_per_event(&self) -> f64 {
        self.steady_cpu * 1e6 / self.events.saturating_sub(1) as f64
    }

    /// Records per second including the group join.
    pub fn rate_with_join(&self) -> f64 {
        self.events as f64 / (self.join + self.steady).as_secs_f64()
    }
}

/// Counts handled records and remembers when the first and the last one came.
struct Progress {
    target: u64,
    count: AtomicU64,
    first: OnceLock<(Instant, f64)>,
    last: OnceLock<(Instant, f64)>,
    done: Notify,
}

impl Progress {
    fn new(target: u64) -> Progress {
        Progress { target, count: AtomicU64::new(0), first: OnceLock::new(), last: OnceLock::new(), done: Notify::new() }
    }

    fn tick(&self) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            let _ = self.first.set((Instant::now(), CpuTime::steady()));
        }
        if n == self.target {
            let _ = self.last.set((Instant::now(), CpuTime::steady()));
            self.done.notify_one();
        }
    }

    fn run(&self, started: Instant) -> Result<ConsumeRun, crate::Error> {
        let (Some(first), Some(last)) = (self.first.get(), self.last.get()) else {
            return Err(format!("only {} of {} records arrived", self.count.load(Ordering::Relaxed), self.target).into());
        };
        Ok(ConsumeRun { events: self.target, join: first.0 - started, steady: last.0 - first.0, pauses: 0, steady_cpu: last.1 - first.1 })
    }
}

/// Herald's consumer with a handler that counts `OrderPlaced` events, until `n` were
/// handled; then it shuts down in order (not timed). `max_buffered_bytes` overrides
/// Herald's default (64 MiB) when given.
pub async fn herald(
    config: &KafkaConfig,
    topic: &Topic<OrderEvent>,
    group: &str,
    n: u64,
    max_buffered_bytes: Option<usize>,
    deadline: Duration,
) -> Result<ConsumeRun, crate::Error> {
    let progress = Arc::new(Progress::new(n));
    let counter = progress.clone();
    let started = Instant::now();
    let consumer = Consumer::builder(config.clone(), group)
        .subscribe(topic, move |envelope: Envelope<OrderEvent>| {
            let counter = counter.clone();
            async move {
                match envelope.event {
                    OrderEvent::Placed(placed) => {
                        black_box(placed);
                        counter.tick();
                        Ok(())
                    }
                    OrderEvent::Confirmed(_) | OrderEvent::Cancelled(_) => Err(HandlerError::permanent_msg("the benchmark only publishes OrderPlaced")),
                }
            }
        });
    let consumer = match max_buffered_bytes {
        Some(n) => consumer.max_buffered_bytes(n),
        None => consumer,
    }
    .build()
    .await?;
    let health = consumer.health();
    let waiter = progress.clone();
    let finished = tokio::time::timeout(deadline, consumer.run(async move { waiter.done.notified().await })).await;
    match finished {
        Ok(result) => result?,
        Err(_) => return Err(format!("Herald consumer: {} of {n} records within {deadline:?}", progress.count.load(Ordering::Relaxed)).into()),
    }
    Ok(ConsumeRun { pauses: health.pauses(), ..progress.run(started)? })
}

/// How a raw consumer decodes each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// Not at all: the transport ceiling.
    None,
    /// Skip the 10-byte single-object frame, then `serde_avro_fast::from_datum_slice`
    /// into `OrderPlaced` with the writer schema parsed once: the fastest decode a user
    /// could write.
    Fast,
    /// Skip the frame, `apache_avro::from_avro_datum` with the writer schema, then
    /// `apache_avro::from_value`: the straightforward apache-avro way.
    Value,
    /// [`Decode::Fast`], and read every header through librdkafka (as anyone who needs
    /// the CloudEvents metadata must): not a goal baseline, it shows how much of Herald's
    /// cost reading headers at all takes.
    FastHeaders,
}

/// A raw `StreamConsumer` with Herald's consumer properties, reading `n` records on the
/// task that polls and decoding each value to an `OrderPlaced` as `decode` says.
pub async fn raw(clients: &Clients, topic: &str, group: &str, n: u64, decode: Decode, deadline: Duration) -> Result<ConsumeRun, crate::Error> {
    let schema = Schema::parse_str(OrderPlaced::SCHEMA)?;
    let fast: serde_avro_fast::Schema = OrderPlaced::SCHEMA.parse()?;
    let progress = Progress::new(n);
    let started = Instant::now();
    let consumer: StreamConsumer = clients.raw_consumer(group).create()?;
    consumer.subscribe(&[topic])?;
    let read = async {
        for _ in 0..n {
            let msg = consumer.recv().await?;
            if decode == Decode::FastHeaders {
                use rdkafka::message::Headers;
                for header in msg.headers().iter().flat_map(|h| h.iter()) {
                    black_box((header.key, header.value));
                }
            }
            if decode != Decode::None {
                let payload = msg.payload().ok_or("record without value")?;
                let mut datum = payload.get(FRAME_LEN..).ok_or("record shorter than its frame")?;
                if matches!(decode, Decode::Fast | Decode::FastHeaders) {
                    black_box(serde_avro_fast::from_datum_slice::<OrderPlaced>(datum, &fast)?);
                } else {
                    let value = apache_avro::from_avro_datum(&schema, &mut datum, None)?;
                    black_box(apache_avro::from_value::<OrderPlaced>(&value)?);
                }
            }
            progress.tick();
        }
        Ok::<_, crate::Error>(())
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result?,
        Err(_) => return Err(format!("raw consumer: {} of {n} records within {deadline:?}", progress.count.load(Ordering::Relaxed)).into()),
    }
    // Leaving the group can block; it is not part of the measurement.
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    progress.run(started)
}
