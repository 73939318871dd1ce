//! Rebuilds: a new version of a view, built from the beginning of the log beside the live
//! one, then swapped in atomically.
//!
//! 1. The new version `N` (one past the highest known) gets its own tables
//!    (`customer_totals__vN`, ...) and its own positions; a projector writing version `N`
//!    reads the topic from the beginning in its own consumer group, while the live version
//!    keeps serving queries through the database views.
//! 2. Once it reached the end of the log as it was when it started, it runs short catch-up
//!    passes until a pass finds little left to do.
//! 3. One transaction re-points the views at version `N` and records it as live (the old
//!    one as previous, kept for [`rollback`]). Readers see the old or the new view, never
//!    a mix, never an empty one.
//! 4. A live projector notices the swap at its next batch and stops with
//!    `Stopped::Superseded`; built again, it continues
//!    version `N` from `N`'s stored positions.
//!
//! Time travel: [`StopAt::Offsets`] or [`StopAt::Before`] build version `N` up to those
//! offsets or that time and leave it beside the live one (no swap) for inspection.
//!
//! A rebuild stopped early (its `shutdown` completed) says so ([`Rebuilt::interrupted`]):
//! the version it leaves is partial and never swapped in. Started again, a rebuild builds a
//! new version from the beginning of the log.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_bus::{EventFamily, KafkaConfig, Topic};

use crate::error::ProjectorError;
use crate::projection::Projection;
use crate::runner::{Projector, StopAt, Stopped};
use crate::status::StatusHandle;
use crate::store::Store;
use crate::views;

/// Settings of a rebuild.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base of the consumer group name; the rebuild uses `<group>.rebuild.v<N>`.
    pub group: String,
    /// How far to build: [`StopAt::CaughtUp`] (default) for a full rebuild, or a time or
    /// offsets for time travel.
    pub until: StopAt,
    /// Swap the new version in once built (default true; ignored for time travel).
    pub swap: bool,
    /// Show a progress bar on stderr (feature `progress`).
    pub progress: bool,
    /// Most events per transaction.
    pub max_batch: usize,
    /// Catch-up passes stop once a pass applied at most this many events (default 1000).
    pub settle: u64,
}

impl Options {
    /// A full rebuild with swap, in groups named after `group`.
    pub fn new(group: impl Into<String>) -> Self {
        Options { group: group.into(), until: StopAt::CaughtUp, swap: true, progress: false, max_batch: 5000, settle: 1000 }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The version built.
    pub version: u32,
    /// The version live before (kept for rollback) if the new one was swapped in.
    pub previous: Option<u32>,
    /// Whether the new version is live now.
    pub swapped: bool,
    /// Events applied.
    pub events: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// True when `shutdown` stopped it before the stop point: the version holds only part
    /// of what was asked for (and was not swapped in).
    pub interrupted: bool,
}

/// Builds a new version of `P`'s view and (for a full rebuild) swaps it in. `projection`
/// makes the projection for each pass. Stops early, without swapping, when `shutdown`
/// completes.
pub async fn rebuild<F, P>(
    config: &KafkaConfig,
    topic: &Topic<F>,
    projection: impl Fn() -> P,
    store: Arc<dyn Store>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<Rebuilt, ProjectorError>
where
    F: EventFamily,
    P: Projection<F>,
{
    let started = Instant::now();
    // A version of its own: never one built before (its positions would say it is done).
    let version = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || views::next_version(&*store, P::NAME)).await.map_err(|e| ProjectorError::StoreThread(e.to_string()))??
    };
    let time_travel = !matches!(options.until, StopAt::CaughtUp | StopAt::Never);
    let group = format!("{}.rebuild.v{version}", options.group);
    tracing::info!(projection = P::NAME, version, ?options.until, "rebuilding");
    tokio::pin!(shutdown);
    // A topic the broker does not know fails here, before anything is built.
    let total = total_events(config, topic.name()).await?;
    let bar = Progress::new(options.progress, total);
    let mut events = 0u64;
    let mut pass = 0;
    loop {
        pass += 1;
        let until = if pass == 1 { options.until.clone() } else { StopAt::CaughtUp };
        let projector = Projector::builder(config.clone(), &group, topic, projection(), store.clone())
            .version(version)
            .stop_at(until)
            .max_batch(options.max_batch)
            .build()
            .await?;
        let status = projector.status();
        let before = events;
        let watch = bar.watch(status.clone(), before);
        // Stopped in order by `shutdown` (what it finished is committed and counted).
        let (stopped, finished) = projector.run_counted(&mut shutdown).await?;
        watch.abort();
        if stopped == Stopped::StopPoint && finished == 0 {
            // Nothing owned, nothing finished: the version is not a view of the topic.
            bar.finish();
            return Err(ProjectorError::NothingRebuilt { projection: P::NAME.to_owned(), version, topic: topic.name().to_owned() });
        }
        events += status.get().applied_total;
        bar.set(events);
        if stopped != Stopped::StopPoint {
            bar.finish();
            return Ok(Rebuilt { version, previous: None, swapped: false, events, elapsed: started.elapsed(), interrupted: true });
        }
        let applied = events - before;
        tracing::info!(pass, applied, "rebuild pass done");
        if time_travel || !options.swap || (pass > 1 && applied <= options.settle) || pass >= 5 {
            break;
        }
    }
    bar.finish();
    if time_travel || !options.swap {
        return Ok(Rebuilt { version, previous: None, swapped: false, events, elapsed: started.elapsed(), interrupted: false });
    }
    let previous = swap_to::<F, P>(store, projection(), version).await?;
    tracing::info!(projection = P::NAME, version, ?previous, "swapped");
    Ok(Rebuilt { version, previous, swapped: true, events, elapsed: started.elapsed(), interrupted: false })
}

/// Makes the previous version live again (the current one becomes previous).
pub async fn rollback<F, P>(projection: P, store: Arc<dyn Store>) -> Result<Option<u32>, ProjectorError>
where
    F: EventFamily,
    P: Projection<F>,
{
    let versions = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || views::versions(&*store, P::NAME)).await.map_err(|e| ProjectorError::StoreThread(e.to_string()))??
    };
    let Some((_, Some(previous))) = versions else { return Ok(None) };
    swap_to::<F, P>(store, projection, previous).await?;
    Ok(Some(previous))
}

async fn swap_to<F: EventFamily, P: Projection<F>>(store: Arc<dyn Store>, projection: P, version: u32) -> Result<Option<u32>, ProjectorError> {
    tokio::task::spawn_blocking(move || views::swap::<F, P>(&*store, &projection, version))
        .await
        .map_err(|e| ProjectorError::StoreThread(e.to_string()))?
        .map_err(|source| ProjectorError::Migrate { projection: P::NAME.to_owned(), source })
}

/// The records in `topic` now (for the progress bar); an error for a topic the broker
/// does not know.
async fn total_events(config: &KafkaConfig, topic: &str) -> Result<u64, ProjectorError> {
    let (config, topic) = (config.clone(), topic.to_owned());
    let ends = tokio::task::spawn_blocking(move || crate::status::end_offsets(&config, &topic))
        .await
        .map_err(|e| ProjectorError::StoreThread(e.to_string()))??;
    Ok(ends.values().map(|(low, high)| (high - low).max(0) as u64).sum())
}

/// The progress of a rebuild, when asked for: a bar on a terminal (with the `progress`
/// feature), else a line on stderr at the start of each pass and every [`LOG_EVERY`] (a
/// CI log, `nohup`, a pipe: where a bar shows nothing useful).
struct Progress {
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
    /// Lines instead of a bar: the events the topic held when the rebuild started.
    lines: Option<u64>,
}

/// How often a rebuild whose stderr is not a terminal says how far it is.
const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    fn new(show: bool, total: u64) -> Self {
        use std::io::IsTerminal as _;
        let on_terminal = show && std::io::stderr().is_terminal() && cfg!(feature = "progress");
        let lines = (show && !on_terminal).then_some(total);
        #[cfg(feature = "progress")]
        {
            let bar = on_terminal.then(|| {
                let bar = indicatif::ProgressBar::new(total);
                let style = indicatif::ProgressStyle::with_template("{spinner} rebuild [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                bar.set_style(style.progress_chars("=> "));
                bar
            });
            Progress { bar, lines }
        }
        #[cfg(not(feature = "progress"))]
        {
            Progress { lines }
        }
    }

    fn set(&self, _events: u64) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            if _events > bar.length().unwrap_or(0) {
                bar.set_length(_events);
            }
            bar.set_position(_events);
        }
    }

    /// Follows a pass's status until aborted.
    fn watch(&self, status: StatusHandle, base: u64) -> tokio::task::AbortHandle {
        #[cfg(feature = "progress")]
        if let Some(bar) = self.bar.clone() {
            return tokio::spawn(async move {
                loop {
                    let n = base + status.get().applied_total;
                    if n > bar.length().unwrap_or(0) {
                        bar.set_length(n);
                    }
                    bar.set_position(n);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .abort_handle();
        }
        if let Some(total) = self.lines {
            let started = Instant::now();
            let mut every = tokio::time::interval(LOG_EVERY);
            return tokio::spawn(async move {
                loop {
                    every.tick().await;
                    let n = base + status.get().applied_total;
                    let rate = n.saturating_sub(base) as f64 / started.elapsed().as_secs_f64().max(0.001);
                    eprintln!("rebuild: {n} of {} events ({rate:.0}/s)", total.max(n));
                }
            })
            .abort_handle();
        }
        let _ = (status, base);
        tokio::spawn(async {}).abort_handle()
    }

    fn finish(&self) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
