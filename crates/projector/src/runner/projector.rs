//! [`Projector`]: a running projection, on the consumer runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_bus::runtime::{ConsumerHealth, Observer, PartitionLoad, Runtime};
use herald_bus::{EventFamily, KafkaConfig, RetryPolicy, Topic};
use tokio::sync::{mpsc, oneshot, Notify};

use super::board::{Board, Stop};
use super::sink::ProjectorSink;
use super::{Control, OnPoison, ProjectorBuilder, StopAt, Stopped};
use crate::error::ProjectorError;
use crate::position::Key;
use crate::projection::Projection;
use crate::status::{StatusHandle, Watermarks};
use crate::store::Store;
use crate::worker::Job;

/// A running projection: see the [module docs](super).
pub struct Projector<F: EventFamily, P> {
    pub(super) runtime: Runtime<ProjectorSink<F>>,
    pub(super) key: Key,
    pub(super) jobs: std_mpsc::Sender<Job<F>>,
    pub(super) thread: std::thread::JoinHandle<()>,
    pub(super) board: Arc<Board>,
    pub(super) stop: Arc<Notify>,
    pub(super) watermarks: Arc<Watermarks>,
    pub(super) status: StatusHandle,
    pub(super) control: Control,
    pub(super) follow_live: bool,
    pub(super) group: String,
    pub(super) _projection: PhantomData<fn() -> P>,
}

impl<F: EventFamily, P: Projection<F>> Projector<F, P> {
    /// Starts building a projector of `projection` over `topic` in consumer group `group`,
    /// storing views and positions in `store`.
    pub fn builder(config: KafkaConfig, group: impl Into<String>, topic: &Topic<F>, projection: P, store: Arc<dyn Store>) -> ProjectorBuilder<F, P> {
        ProjectorBuilder {
            config,
            group: group.into(),
            topic: topic.name().to_owned(),
            projection,
            store,
            properties: Vec::new(),
            max_batch: 1000,
            max_buffered: 5000,
            retry: RetryPolicy::default(),
            on_poison: OnPoison::default(),
            #[cfg(feature = "crash-points")]
            crash: None,
            revoke_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            version: None,
            stop_at: StopAt::Never,
            create_dead_letter_topic: true,
            handles: None,
            _family: PhantomData,
        }
    }

    /// The live status (for `GET /status`).
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Operator commands (retry or skip a partition's failing record).
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The consumer group it reads in (what the service registry records, what lag tools
    /// show).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The view version this projector writes.
    pub fn version(&self) -> u32 {
        self.key.version
    }

    /// Runs until `shutdown` completes (or the [`StopAt`] point is reached, or another
    /// view version goes live), then shuts down in order: the batches in flight finish
    /// (up to the drain timeout), positions are mirrored to the group, the dead-letter
    /// producer is flushed, the member leaves the group, the store thread stops.
    ///
    /// Records fetched but not yet committed are simply fetched again by the next owner:
    /// the stored position says where to start.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Stopped, ProjectorError> {
        Ok(self.run_counted(shutdown).await?.0)
    }

    /// [`Projector::run`], and the number of partitions it owned and finished when it
    /// stopped at its [`StopAt`] point (0 for any other stop).
    pub(crate) async fn run_counted(self, shutdown: impl Future<Output = ()>) -> Result<(Stopped, usize), ProjectorError> {
        let Projector { runtime, key, jobs, thread, board, stop, watermarks, status, control: _, follow_live, group: _, _projection } = self;
        status.update(|s| s.running = true);
        let health = runtime.health();
        let observer = runtime.observer();
        let stopping = async {
            tokio::select! {
                _ = shutdown => {}
                _ = stop.notified() => {}
            }
        };
        let watch = watch::<F>(&key, (&jobs, &thread), &board, &stop, &watermarks, &status, (&health, &observer), follow_live);
        let ran = tokio::select! {
            ran = runtime.run(stopping) => ran,
            never = watch => match never {},
        };
        publish(&key, &board, &status, (&health, observer.partitions()), &mut BTreeSet::new());
        status.update(|s| s.running = false);
        drop(jobs);
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if let Some(why) = board.fatal() {
            // The store thread's panic, when it panicked.
            let panic = match &joined {
                Ok(Err(payload)) => herald_bus::panics::message(&**payload),
                _ => None,
            };
            return Err(ProjectorError::StoreThread(match panic {
                Some(panic) => format!("{why}; it panicked: {panic}"),
                None => why,
            }));
        }
        ran?;
        let stopped = board.stopped().unwrap_or(Stopped::Shutdown);
        let finished = if stopped == Stopped::StopPoint { board.finished() } else { 0 };
        Ok((stopped, finished))
    }
}

/// Where each partition stops, for the stop-at modes: at the end of the log as it is now,
/// or at the given offset (exclusive), which may lie past it (then it is waited for).
pub(super) async fn stop_offsets(watermarks: &Arc<Watermarks>, stop_at: &StopAt) -> Result<BTreeMap<i32, Stop>, ProjectorError> {
    let watermarks = watermarks.clone();
    let ends = tokio::task::spawn_blocking(move || watermarks.fetch()).await.map_err(|e| ProjectorError::StoreThread(e.to_string()))??;
    let mut stops: BTreeMap<i32, Stop> = ends.into_iter().map(|(p, (_, end))| (p, Stop::new(end, end))).collect();
    if let StopAt::Offsets(given) = stop_at {
        for (&p, &o) in given {
            // Either could never be reached: the projector would wait for it for good.
            let Some(stop) = stops.get_mut(&p) else {
                return Err(ProjectorError::InvalidStop(format!("partition {p} is not one of the topic's (0 to {})", stops.len().saturating_sub(1))));
            };
            if o < 0 {
                return Err(ProjectorError::InvalidStop(format!("offset {o} of partition {p} is negative")));
            }
            *stop = Stop::new(o, stop.offset);
        }
    }
    Ok(stops)
}

/// Beside the runtime, every 20 ms: the status page and metrics, the stop point, the live
/// view version (every second: an idle projector learns of a swap here, a busy one at its
/// next batch), the end offsets (every two seconds, through one kept client), whether the
/// store thread still runs (when it stopped, the projector stops with an error). Never
/// ends.
#[allow(clippy::too_many_arguments)]
async fn watch<F: EventFamily>(
    key: &Key,
    (jobs, thread): (&std_mpsc::Sender<Job<F>>, &std::thread::JoinHandle<()>),
    board: &Arc<Board>,
    stop: &Notify,
    watermarks: &Arc<Watermarks>,
    status: &StatusHandle,
    runtime: (&ConsumerHealth, &Observer),
    follow_live: bool,
) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ends_refreshed: Option<Instant> = None;
    let mut live_checked = Instant::now();
    // One refresh and one live check at a time: the channels hold one answer each.
    let (ends_tx, mut ends_rx) = mpsc::channel::<BTreeMap<i32, (i64, i64)>>(1);
    let (live_tx, mut live_rx) = mpsc::channel::<u32>(1);
    // At most one live-version question waits in the store thread's queue (a stuck store
    // must not collect one per second).
    let asking = Arc::new(AtomicBool::new(false));
    let mut gauged = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(ends) = ends_rx.recv() => board.ends(&ends),
            Some(live) = live_rx.recv() => {
                if live != key.version {
                    tracing::info!(live, version = key.version, "another view version is live now: stopping");
                    board.stop(Stopped::Superseded { live });
                    stop.notify_one();
                }
            }
        }
        if ends_refreshed.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            ends_refreshed = Some(Instant::now());
            let (watermarks, tx) = (watermarks.clone(), ends_tx.clone());
            tokio::task::spawn_blocking(move || {
                if let Ok(ends) = watermarks.fetch() {
                    let _ = tx.try_send(ends);
                }
            });
        }
        if follow_live && live_checked.elapsed() > Duration::from_secs(1) && !asking.swap(true, Ordering::AcqRel) {
            live_checked = Instant::now();
            let (tx, rx) = oneshot::channel();
            if jobs.send(Job::LiveVersion(tx)).is_ok() {
                let (live_tx, asking) = (live_tx.clone(), asking.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(Some(live))) = rx.await {
                        let _ = live_tx.try_send(live);
                    }
                    asking.store(false, Ordering::Release);
                });
            }
        }
        if thread.is_finished() && board.fatal().is_none() {
            tracing::error!("the store thread stopped; stopping the projector");
            board.fail("its thread exited".to_owned());
            stop.notify_one();
        }
        if board.reached_stop() {
            tracing::info!("stop point reached");
            board.stop(Stopped::StopPoint);
            stop.notify_one();
        }
        publish(key, board, status, (runtime.0, runtime.1.partitions()), &mut gauged);
    }
}

/// Updates the status page and the metrics. `gauged`: the partitions whose lag gauge was
/// set last time; one no longer owned here (revoked, or the assignment lost with the
/// broker) gets 0, or its last lag would stay exported for ever beside its new owner's.
fn publish(key: &Key, board: &Board, status: &StatusHandle, (health, loads): (&ConsumerHealth, Vec<PartitionLoad>), gauged: &mut BTreeSet<i32>) {
    let mut partitions = board.partitions();
    for load in loads {
        if let Some(p) = partitions.iter_mut().find(|p| p.partition == load.partition) {
            p.buffered = load.records;
            p.paused |= load.paused;
        }
    }
    // By topic too: one projection may read several (a view of orders, payments and
    // stock), each with its partition 0.
    let lag = |partition: i32| metrics::gauge!("herald_projector_lag", "projection" => key.projection.clone(), "topic" => key.topic.clone(), "partition" => partition.to_string());
    let mut now_gauged = BTreeSet::new();
    for p in &partitions {
        if let Some(known) = p.lag {
            lag(p.partition).set(known as f64);
            now_gauged.insert(p.partition);
        }
    }
    for gone in gauged.difference(&now_gauged) {
        lag(*gone).set(0.0);
    }
    *gauged = now_gauged;
    // The more recent of the store's and the client's errors.
    let last_error = match (board.last_error(), health.last_error_aged()) {
        (Some(store), Some(client)) => Some(if store.1 <= client.1 { store } else { client }),
        (store, client) => store.or(client),
    };
    status.update(|s| {
        s.partitions = partitions;
        s.applied_total = board.applied_total.load(Ordering::Relaxed);
        s.dead_lettered_total = board.dead_lettered_total.load(Ordering::Relaxed);
        s.batches_total = board.batches_total.load(Ordering::Relaxed);
        s.last_error_seconds_ago = last_error.as_ref().map(|(_, age)| age.as_secs());
        s.last_error = last_error.map(|(message, _)| message);
        s.running = health.is_healthy();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `herald_projector_lag` for `partition` in a Prometheus text page.
    fn lag_of(page: &str, partition: i32) -> Option<f64> {
        let label = format!("partition=\"{partition}\"");
        page.lines().find(|l| l.starts_with("herald_projector_lag{") && l.contains(&label)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Found by an outside probe: a revoked partition's lag stayed exported at its last
    /// value beside its new owner's; a partition with nothing applied counted its lag from
    /// offset 0 instead of the log's start; and a store error, once set, hid every later
    /// client error, with no age.
    #[test]
    fn lag_counts_from_the_log_start_and_a_partition_gone_is_zeroed_and_errors_show_their_age() {
        let recorder = herald_ops::prometheus().expect("builder").build_recorder();
        let page = recorder.handle();
        let key = Key { projection: "p".into(), version: 1, topic: "t".into() };
        let (board, status, health) = (Board::default(), StatusHandle::default(), ConsumerHealth::default());
        let mut gauged = BTreeSet::new();
        board.assign(0, None);
        board.assign(1, Some(2));
        // Partition 0's records before 5 were deleted (or expired): nothing left to read.
        board.ends(&BTreeMap::from([(0, (5, 5)), (1, (0, 10))]));
        metrics::with_local_recorder(&recorder, || publish(&key, &board, &status, (&health, Vec::new()), &mut gauged));
        let shown = status.get();
        assert_eq!(shown.partitions.iter().map(|p| p.lag).collect::<Vec<_>>(), [Some(0), Some(8)]);
        assert_eq!((lag_of(&page.render(), 0), lag_of(&page.render(), 1)), (Some(0.0), Some(8.0)));
        assert_eq!((shown.last_error, shown.last_error_seconds_ago), (None, None));

        board.revoke(1);
        board.error(0, "store: cannot connect".into());
        metrics::with_local_recorder(&recorder, || publish(&key, &board, &status, (&health, Vec::new()), &mut gauged));
        assert_eq!(lag_of(&page.render(), 1), Some(0.0), "no longer owned here: its new owner reports it");
        let shown = status.get();
        assert_eq!(shown.last_error.as_deref(), Some("partition 0: store: cannot connect"));
        assert!(shown.last_error_seconds_ago.is_some_and(|s| s < 60), "{shown:?}");
    }
}
