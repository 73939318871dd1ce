//! Fault hooks: the relay calls a hook at each step of a batch, so tests can crash it
//! exactly there. Only binaries decide to install one (the relay binary reads
//! `HERALD_OUTBOX_CRASH_AT`); the library never reads the environment.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
#[derive(Debug)]
pub struct CrashAt {
    /// Where.
    pub step: Step,
    /// At which arrival (1-based).
    pub n: u64,
    seen: AtomicU64,
}

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
impl FromStr for CrashAt {
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
