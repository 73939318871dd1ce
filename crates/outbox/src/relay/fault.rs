//! Fault hooks: the relay calls a hook at each step of a batch, so tests can crash it
//! exactly there. The library never reads the environment, and [`CrashAt`] exists only
//! with the `crash-points` feature, which only the fault tests' build of the relay
//! (`examples/relay_crash.rs`, reading `HERALD_OUTBOX_CRASH_AT`) enables.

use std::sync::Arc;
#[cfg(feature = "crash-points")]
use std::sync::atomic::{AtomicU64, Ordering};

/// A step of relaying one batch, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The batch's rows were read; nothing was sent yet.
    Read,
    /// Every row of the batch was handed to the producer; none is acknowledged yet.
    Produced,
    /// The broker acknowledged the batch; its rows are not deleted yet.
    Acknowledged,
    /// The acknowledged rows were deleted (committed).
    Marked,
}

/// What the relay calls at each [`Step`] (see the module docs).
pub type FaultHook = Arc<dyn Fn(Step) + Send + Sync>;

/// Aborts the process the `n`th time the relay reaches a step: what `kill -9` at that
/// step looks like to PostgreSQL and Kafka (no destructor, no rollback, no flush).
///
/// ```
/// use herald_outbox::relay::{CrashAt, Step};
/// let crash: CrashAt = "acknowledged:3".parse().unwrap();
/// assert_eq!((crash.step, crash.n), (Step::Acknowledged, 3));
/// assert!("later:1".parse::<CrashAt>().is_err());
/// ```
#[cfg(feature = "crash-points")]
#[derive(Debug)]
pub struct CrashAt {
    /// Where.
    pub step: Step,
    /// At which arrival (1-based).
    pub n: u64,
    seen: AtomicU64,
}

#[cfg(feature = "crash-points")]
impl CrashAt {
    /// The hook that aborts there.
    pub fn into_hook(self) -> FaultHook {
        Arc::new(move |step| {
            if step == self.step && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
                tracing::error!(?step, n = self.n, "crash point reached: aborting");
                std::process::abort();
            }
        })
    }
}

/// `step:N`, step one of `read`, `produced`, `acknowledged`, `marked`.
#[cfg(feature = "crash-points")]
impl std::str::FromStr for CrashAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (step, n) = s.split_once(':').ok_or_else(|| format!("expected step:N, got {s:?}"))?;
        let step = match step {
            "read" => Step::Read,
            "produced" => Step::Produced,
            "acknowledged" => Step::Acknowledged,
            "marked" => Step::Marked,
            other => return Err(format!("unknown step {other:?} (read, produced, acknowledged, marked)")),
        };
        let n = n.parse::<u64>().map_err(|_| format!("expected a count after ':', got {n:?}"))?.max(1);
        Ok(CrashAt { step, n, seen: AtomicU64::new(0) })
    }
}
