//! Stopping workers under a deadline: on shutdown (drain what is queued) and on
//! revocation (stop after the current record).
//!
//! Shutdown is a protocol, not `Drop`: stop intake; let the workers finish what they hold
//! (up to the drain timeout); then cancel them (they stop after their current record) and
//! give them a short grace; abort what is still running (its record was not finished, so
//! it is processed again: at least once); store what every worker finished; commit; flush
//! the dead-letter producer; leave the group.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a cancelled worker gets to finish its current record before it is aborted.
pub const GRACE: Duration = Duration::from_secs(5);

/// A worker being stopped: its cancellation token and task.
pub struct Stopping {
    /// Stops the worker after its current record.
    pub cancel: CancellationToken,
    /// The worker's task.
    pub task: JoinHandle<()>,
}

/// How a drain ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Workers that finished what they held before the deadline.
    pub finished: usize,
    /// Workers cancelled at the deadline that stopped within the grace.
    pub cancelled: usize,
    /// Workers aborted after the grace.
    pub aborted: usize,
}

/// Waits for `workers` (whose queues are closed) to finish what they hold, up to
/// `timeout`; cancels the rest, waits [`GRACE`], aborts what still runs.
pub async fn drain(workers: Vec<Stopping>, timeout: Duration) -> Drained {
    stop(workers, Instant::now() + timeout, false).await
}

/// Cancels `workers` at once (they stop after their current record), waits for them until
/// `deadline`, aborts what still runs. For revocations, which must be quick.
pub async fn cancel(workers: Vec<Stopping>, deadline: Instant) -> Drained {
    stop(workers, deadline, true).await
}

async fn stop(mut workers: Vec<Stopping>, deadline: Instant, cancel_now: bool) -> Drained {
    let mut drained = Drained::default();
    if cancel_now {
        workers.iter().for_each(|w| w.cancel.cancel());
    } else {
        let mut waiting = Vec::new();
        for mut w in workers {
            match tokio::time::timeout_at(deadline, &mut w.task).await {
                Ok(_) => drained.finished += 1,
                Err(_) => waiting.push(w),
            }
        }
        workers = waiting;
        workers.iter().for_each(|w| w.cancel.cancel());
    }
    let grace_end = if cancel_now { deadline } else { Instant::now() + GRACE };
    for mut w in workers {
        match tokio::time::timeout_at(grace_end, &mut w.task).await {
            Ok(_) => drained.cancelled += 1,
            Err(_) => {
                w.task.abort();
                drained.aborted += 1;
            }
        }
    }
    drained
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(work: Duration, honours_cancel: bool) -> Stopping {
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let task = tokio::spawn(async move {
            if honours_cancel {
                tokio::select! {
                    _ = tokio::time::sleep(work) => {}
                    _ = token.cancelled() => {}
                }
            } else {
                tokio::time::sleep(work).await;
            }
        });
        Stopping { cancel, task }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_the_deadline_then_cancels_then_aborts() {
        let started = Instant::now();
        let workers = vec![
            worker(Duration::from_secs(2), true),     // finishes in time
            worker(Duration::from_secs(60), true),    // stops when cancelled at the deadline
            worker(Duration::from_secs(3600), false), // stuck: aborted after the grace
        ];
        let drained = drain(workers, Duration::from_secs(10)).await;
        assert_eq!(drained, Drained { finished: 1, cancelled: 1, aborted: 1 });
        assert_eq!(started.elapsed(), Duration::from_secs(10) + GRACE, "drain timeout, then the grace, on tokio's clock");
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_cancels_at_once_and_aborts_at_its_deadline() {
        let started = Instant::now();
        let workers = vec![worker(Duration::from_secs(60), true), worker(Duration::from_secs(3600), false)];
        let drained = cancel(workers, Instant::now() + Duration::from_secs(3)).await;
        assert_eq!(drained, Drained { finished: 0, cancelled: 1, aborted: 1 });
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
