//! Crash points for fault tests: abort the process at a chosen point of the pipeline.
//!
//! Only binaries decide to use one (the example reads `HERALD_PROJECTOR_CRASH_AT`); the
//! library never reads the environment. `abort()` is what `kill -9` looks like from the
//! store's side: no destructor, no rollback, no flush.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where in the pipeline to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// After the batch's position compare-and-set, before applying its events.
    BeforeApply,
    /// After applying a batch's events, before its transaction commits.
    AfterApply,
    /// After the transaction committed, before the Kafka offsets are mirrored.
    AfterCommit,
    /// After a dead letter was acknowledged, before the position moved past it.
    AfterDeadLetter,
}

/// Crash at the `n`th time `stage` is reached (1-based).
#[derive(Debug)]
pub struct CrashPoint {
    stage: Stage,
    n: u64,
    seen: AtomicU64,
}

impl CrashPoint {
    /// A crash point.
    pub fn new(stage: Stage, n: u64) -> Self {
        CrashPoint { stage, n: n.max(1), seen: AtomicU64::new(0) }
    }

    /// Aborts the process if this is the chosen arrival at `stage`.
    pub fn reached(&self, stage: Stage) {
        if stage == self.stage && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            tracing::error!(?stage, n = self.n, "crash point reached: aborting");
            std::process::abort();
        }
    }
}

/// `stage:N` with stage one of `before_apply`, `after_apply`, `after_commit`, `after_dlq`.
impl FromStr for CrashPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (stage, n) = s.split_once(':').ok_or_else(|| format!("expected stage:N, got {s:?}"))?;
        let stage = match stage {
            "before_apply" => Stage::BeforeApply,
            "after_apply" => Stage::AfterApply,
            "after_commit" => Stage::AfterCommit,
            "after_dlq" => Stage::AfterDeadLetter,
            other => return Err(format!("unknown crash stage {other:?}")),
        };
        let n = n.parse().map_err(|_| format!("expected a count after ':', got {n:?}"))?;
        Ok(CrashPoint::new(stage, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_ignores_other_stages() {
        let p: CrashPoint = "after_apply:3".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.stage, p.n), (Stage::AfterApply, 3));
        p.reached(Stage::AfterCommit);
        p.reached(Stage::AfterApply);
        assert!("after_apply".parse::<CrashPoint>().is_err());
        assert!("nowhere:1".parse::<CrashPoint>().is_err());
    }
}
