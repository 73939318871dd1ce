//! The projector's policies: what to do with poison records, where to stop, why it stopped.

use std::collections::BTreeMap;

/// What to do with a poison record (undecodable, or failing permanently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPoison {
    /// Write it to the dead-letter topic and move on (default).
    #[default]
    DeadLetter,
    /// Stop the partition there (circuit open) until an operator retries or skips it.
    Pause,
}

/// Where a projector stops by itself (used by rebuilds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAt {
    /// Never: run until the shutdown future completes.
    Never,
    /// Once every partition reached the end of the log as it was when the projector was built.
    CaughtUp,
    /// Once every partition reached the given offsets (exclusive); partitions not listed
    /// are read to their end at start. An offset past the end of the log is waited for.
    Offsets(BTreeMap<i32, i64>),
    /// Apply the records before the first whose timestamp is at or after this
    /// (milliseconds since the epoch), then stop: each partition stops at its first such
    /// record (a later record with an earlier timestamp, which producers can write, is
    /// not applied) or at the end of the log as it was at start. Records without a
    /// timestamp are applied.
    Before(i64),
}

/// Why [`Projector::run`](super::Projector::run) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// The shutdown future completed.
    Shutdown,
    /// The [`StopAt`] point was reached.
    StopPoint,
    /// A rebuild made another version live: build a new projector (it will write the
    /// live version, from that version's stored positions).
    Superseded {
        /// The version now live.
        live: u32,
    },
}
