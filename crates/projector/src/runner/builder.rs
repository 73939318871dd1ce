//! [`ProjectorBuilder`]: a projection, its topic and store, tuned, then built.

use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_bus::codec::SingleObject;
use herald_bus::dead_letter;
use herald_bus::runtime::dead_letter::DeadLetters;
use herald_bus::runtime::{Runtime, Settings};
use herald_bus::{EventFamily, KafkaConfig, RetryPolicy};
use tokio::sync::Notify;

use super::board::Board;
use super::letters::PoisonPolicy;
use super::sink::{self, ProjectorSink};
use super::{Control, OnPoison, Projector, StopAt, CONSUMER_DEFAULTS};
#[cfg(feature = "crash-points")]
use crate::crash::CrashPoint;
use crate::error::ProjectorError;
use crate::position::Key;
use crate::projection::Projection;
use crate::status::{StatusHandle, Watermarks};
use crate::store::Store;
use crate::worker::{Ownership, Worker};

/// Builds a [`Projector`]. Defaults: batches of at most 1000 records, 5000 records
/// buffered per partition, [`RetryPolicy::default`], [`OnPoison::DeadLetter`].
pub struct ProjectorBuilder<F, P> {
    pub(super) config: KafkaConfig,
    pub(super) group: String,
    pub(super) topic: String,
    pub(super) projection: P,
    pub(super) store: Arc<dyn Store>,
    pub(super) properties: Vec<(String, String)>,
    pub(super) max_batch: usize,
    pub(super) max_buffered: usize,
    pub(super) retry: RetryPolicy,
    pub(super) on_poison: OnPoison,
    #[cfg(feature = "crash-points")]
    pub(super) crash: Option<CrashPoint>,
    pub(super) revoke_timeout: Duration,
    pub(super) drain_timeout: Duration,
    pub(super) version: Option<u32>,
    pub(super) stop_at: StopAt,
    pub(super) create_dead_letter_topic: bool,
    pub(super) handles: Option<(StatusHandle, Control)>,
    pub(super) _family: PhantomData<fn() -> F>,
}

impl<F: EventFamily, P: Projection<F>> ProjectorBuilder<F, P> {
    /// Reports to `status` and takes commands from `control` (handles of an earlier
    /// projector, so an HTTP server outlives the restart after a rebuild swapped versions).
    pub fn handles(mut self, status: StatusHandle, control: Control) -> Self {
        self.handles = Some((status, control));
        self
    }

    /// Sets a librdkafka property of the consumer (wins over the defaults and the
    /// [`KafkaConfig`]'s properties).
    pub fn kafka_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Most records in one transaction (default 1000).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Records buffered ahead of the store per partition, counted as 1 KiB each, before
    /// the partition is paused (default 5000): the runtime's byte budget is four times
    /// that (see [`herald_bus::runtime::flow`]).
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.max_buffered = n.max(2);
        self
    }

    /// Retry policy for failing records (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// What to do with poison records (default [`OnPoison::DeadLetter`]).
    pub fn on_poison(mut self, policy: OnPoison) -> Self {
        self.on_poison = policy;
        self
    }

    /// A crash point, for fault tests only (feature `crash-points`, which only tests
    /// enable: production builds have no way to abort at a crash point).
    #[cfg(feature = "crash-points")]
    pub fn crash_point(mut self, point: CrashPoint) -> Self {
        self.crash = Some(point);
        self
    }

    /// How long a revocation waits for the batch in flight (default 10 s).
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// How long shutdown waits for the batch in flight (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Writes view version `version` instead of the live one (rebuilds).
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Stops by itself at this point (default: never).
    pub fn stop_at(mut self, stop: StopAt) -> Self {
        self.stop_at = stop;
        self
    }

    /// Whether to create the dead-letter topic when missing (default true).
    pub fn create_dead_letter_topic(mut self, create: bool) -> Self {
        self.create_dead_letter_topic = create;
        self
    }

    /// Migrates the store, reads where a [`StopAt`] mode stops (refusing a stop point that
    /// could never be reached), creates the consumer and the dead-letter producer,
    /// subscribes.
    /// Needs tokio's multi-threaded runtime (rebalance hooks wait for the store thread);
    /// on a current-thread runtime it fails with a clear error.
    pub async fn build(self) -> Result<Projector<F, P>, ProjectorError> {
        herald_bus::runtime::require_multi_thread()?;
        tracing::info!(projection = P::NAME, topic = %self.topic, group = %self.group, store = self.store.kind(), "projector starting");
        let projection = Arc::new(self.projection);
        let version = crate::views::prepare::<F, P>(self.store.clone(), projection.clone(), self.version).await?;
        let key = Key { projection: P::NAME.to_owned(), version, topic: self.topic.clone() };
        if self.create_dead_letter_topic {
            dead_letter::create_topics(&self.config, &[&self.topic]).await?;
        }
        // Where a stop-at mode stops, known (or refused) before the consumer joins its
        // group: a member that leaves at once gains nothing and costs a rebalance.
        let watermarks = Arc::new(Watermarks::new(self.config.clone(), self.topic.clone()));
        let board = Arc::new(Board::default());
        if self.stop_at != StopAt::Never {
            board.set_stops(Some(super::projector::stop_offsets(&watermarks, &self.stop_at).await?));
        }
        let ownership: Ownership = Arc::default();
        let (jobs, job_rx) = std_mpsc::channel();
        let follow_live = self.version.is_none();
        #[cfg(feature = "crash-points")]
        let crash = self.crash.map(Arc::new);
        let worker = Worker::<F, P> {
            store: self.store.clone(),
            projection,
            key: key.clone(),
            ownership: ownership.clone(),
            #[cfg(feature = "crash-points")]
            crash: crash.clone(),
            follow_live,
            max_batch: self.max_batch,
            _family: PhantomData,
        };
        let thread = std::thread::Builder::new()
            .name(format!("herald-projector-{}", P::NAME))
            .spawn(move || worker.run(job_rx))
            .map_err(|e| ProjectorError::StoreThread(e.to_string()))?;
        let (status, control) = self.handles.unwrap_or_default();
        status.update(|s| {
            s.projection = P::NAME.to_owned();
            s.version = version;
            s.topic = self.topic.clone();
            s.group = self.group.clone();
        });
        let stop = Arc::new(Notify::new());
        let shared = Arc::new(sink::Shared {
            key: key.clone(),
            store: self.store.clone(),
            reader: Mutex::new(None),
            ownership,
            generation: AtomicU64::new(0),
            jobs: jobs.clone(),
            board: board.clone(),
            codec: Arc::new(SingleObject::new(F::schemas().clone())),
            stop_at: self.stop_at.clone(),
            max_batch: self.max_batch,
            stop: stop.clone(),
            watermarks: watermarks.clone(),
            #[cfg(feature = "crash-points")]
            crash,
        });
        let publisher = dead_letter::publisher(&self.config, format!("herald:projector:{}", P::NAME))?;
        let letters = Arc::new(PoisonPolicy {
            dead_letters: DeadLetters { publisher, group: self.group.clone() },
            policy: self.on_poison,
            control: control.clone(),
            board: board.clone(),
        });
        let mut properties: Vec<(String, String)> = CONSUMER_DEFAULTS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        properties.extend(self.properties);
        let settings = Settings {
            max_buffered_bytes: self.max_buffered.saturating_mul(4 << 10),
            drain_timeout: self.drain_timeout,
            revoke_timeout: self.revoke_timeout,
            retry: self.retry,
            properties,
            ..Settings::new(self.group.clone(), vec![self.topic.clone()])
        };
        let runtime = Runtime::new(&self.config, settings, ProjectorSink { shared }, letters)?;
        Ok(Projector {
            runtime,
            key,
            jobs,
            thread,
            board,
            stop,
            watermarks,
            status,
            control,
            group: self.group.clone(),
            follow_live,
            _projection: PhantomData,
        })
    }
}
