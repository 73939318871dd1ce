//! Joins: parallel steps that succeed when all, any, or n of m branches succeed, with a
//! deadline. A small state type participants embed in their own state.

use apache_avro::AvroSchema;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;

/// The result of one branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "herald.choreography")]
pub enum BranchOutcome {
    /// No result yet.
    #[default]
    Pending,
    /// The branch succeeded.
    Succeeded,
    /// The branch failed.
    Failed,
}

/// One branch of a join.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "herald.choreography")]
pub struct Branch {
    /// Its name (an SKU, a service).
    pub name: String,
    /// Its result so far.
    pub outcome: BranchOutcome,
}

/// Where a join stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "herald.choreography")]
pub enum Verdict {
    /// Not decided yet.
    #[default]
    Open,
    /// Enough branches succeeded.
    Succeeded,
    /// Too many branches failed for enough to succeed.
    Failed,
    /// The deadline passed first.
    TimedOut,
}

/// A join over named branches: decided once, the first time enough branches succeeded
/// (`Succeeded`), too many failed (`Failed`) or the deadline passed (`TimedOut`). Results
/// that arrive after the verdict are still recorded (to compensate late successes) but
/// never change it.
///
/// ```
/// use herald_choreography::join::{Join, Verdict};
/// let mut join = Join::all_of(["SKU-1", "SKU-2"], None);
/// assert_eq!(join.succeed("SKU-1"), None);
/// assert_eq!(join.succeed("SKU-1"), None, "a duplicate result changes nothing");
/// assert_eq!(join.succeed("SKU-2"), Some(Verdict::Succeeded));
///
/// let mut two_of_three = Join::n_of(2, ["a", "b", "c"], None);
/// assert_eq!(two_of_three.fail("a"), None);
/// assert_eq!(two_of_three.fail("b"), Some(Verdict::Failed), "c alone cannot make two");
/// assert_eq!(two_of_three.succeed("c"), None, "recorded, but the verdict stands");
/// assert_eq!(two_of_three.succeeded().collect::<Vec<_>>(), ["c"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "herald.choreography")]
pub struct Join {
    /// How many branches must succeed.
    pub need: i32,
    /// The branches, in the order given.
    pub branches: Vec<Branch>,
    /// When the join times out, as epoch milliseconds.
    pub deadline_millis: Option<i64>,
    /// The verdict, once decided.
    pub verdict: Verdict,
}

impl Join {
    /// Succeeds when every branch succeeded; fails at the first failure.
    pub fn all_of<N: Into<String>>(branches: impl IntoIterator<Item = N>, deadline: Option<DateTime<Utc>>) -> Self {
        let mut join = Join::open(0, branches, deadline);
        join.need = i32::try_from(join.branches.len()).unwrap_or(i32::MAX);
        join.settle();
        join
    }

    /// Succeeds at the first success; fails when every branch failed.
    pub fn any_of<N: Into<String>>(branches: impl IntoIterator<Item = N>, deadline: Option<DateTime<Utc>>) -> Self {
        Join::n_of(1, branches, deadline)
    }

    /// Succeeds when `n` branches succeeded; fails when that can no longer happen.
    /// Branch names repeated are one branch.
    pub fn n_of<N: Into<String>>(n: u32, branches: impl IntoIterator<Item = N>, deadline: Option<DateTime<Utc>>) -> Self {
        let mut join = Join::open(n, branches, deadline);
        join.settle();
        join
    }

    /// An undecided join (the constructors then settle degenerate ones).
    fn open<N: Into<String>>(n: u32, branches: impl IntoIterator<Item = N>, deadline: Option<DateTime<Utc>>) -> Self {
        let mut unique: Vec<Branch> = Vec::new();
        for name in branches.into_iter().map(Into::into) {
            if !unique.iter().any(|b| b.name == name) {
                unique.push(Branch { name, outcome: BranchOutcome::Pending });
            }
        }
        Join { need: i32::try_from(n).unwrap_or(i32::MAX), branches: unique, deadline_millis: deadline.map(|d| d.timestamp_millis()), verdict: Verdict::Open }
    }

    /// Records that branch `name` succeeded. Returns the verdict if this result decided
    /// the join; `None` otherwise (undecided, already decided, unknown branch, repeat).
    pub fn succeed(&mut self, name: &str) -> Option<Verdict> {
        self.record(name, BranchOutcome::Succeeded)
    }

    /// Records that branch `name` failed; see [`Join::succeed`].
    pub fn fail(&mut self, name: &str) -> Option<Verdict> {
        self.record(name, BranchOutcome::Failed)
    }

    /// Records the result of branch `name`; see [`Join::succeed`]. A branch's first result
    /// is final.
    pub fn record(&mut self, name: &str, outcome: BranchOutcome) -> Option<Verdict> {
        let branch = self.branches.iter_mut().find(|b| b.name == name)?;
        if branch.outcome != BranchOutcome::Pending || outcome == BranchOutcome::Pending {
            return None;
        }
        branch.outcome = outcome;
        self.settle()
    }

    /// Times the join out if it is still open at `now` and its deadline has passed.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Option<Verdict> {
        let due = self.deadline_millis.is_some_and(|d| d <= now.timestamp_millis());
        if self.verdict == Verdict::Open && due {
            self.verdict = Verdict::TimedOut;
            return Some(Verdict::TimedOut);
        }
        None
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Whether the verdict is in.
    pub fn is_decided(&self) -> bool {
        self.verdict != Verdict::Open
    }

    /// The deadline to set with the reaction that builds the join (name it; the fired
    /// input then calls [`Join::expire`]).
    pub fn deadline(&self, name: &str) -> Option<Deadline> {
        self.deadline_millis.and_then(DateTime::<Utc>::from_timestamp_millis).map(|at| Deadline::at(name, at))
    }

    /// Branches that succeeded.
    pub fn succeeded(&self) -> impl Iterator<Item = &str> {
        self.with(BranchOutcome::Succeeded)
    }

    /// Branches that failed.
    pub fn failed(&self) -> impl Iterator<Item = &str> {
        self.with(BranchOutcome::Failed)
    }

    /// Branches with no result yet.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.with(BranchOutcome::Pending)
    }

    fn with(&self, outcome: BranchOutcome) -> impl Iterator<Item = &str> {
        self.branches.iter().filter(move |b| b.outcome == outcome).map(|b| b.name.as_str())
    }

    /// Decides the verdict if the counts allow it; returns it when it was decided now.
    fn settle(&mut self) -> Option<Verdict> {
        if self.verdict != Verdict::Open {
            return None;
        }
        let count = |o| self.branches.iter().filter(|b| b.outcome == o).count();
        let need = usize::try_from(self.need.max(0)).unwrap_or(usize::MAX);
        let (succeeded, pending) = (count(BranchOutcome::Succeeded), count(BranchOutcome::Pending));
        self.verdict = if succeeded >= need {
            Verdict::Succeeded
        } else if succeeded + pending < need {
            Verdict::Failed
        } else {
            return None;
        };
        Some(self.verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_of_fails_at_the_first_failure_and_late_successes_are_recorded() {
        let mut join = Join::all_of(["a", "b", "c"], None);
        assert_eq!(join.succeed("a"), None);
        assert_eq!(join.fail("b"), Some(Verdict::Failed));
        assert_eq!(join.succeed("c"), None);
        assert_eq!(join.verdict(), Verdict::Failed);
        assert_eq!(join.succeeded().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(join.pending().count(), 0);
    }

    #[test]
    fn any_of_succeeds_at_the_first_success_and_fails_only_when_all_failed() {
        let mut join = Join::any_of(["a", "b"], None);
        assert_eq!(join.fail("a"), None);
        assert_eq!(join.succeed("b"), Some(Verdict::Succeeded));
        let mut none = Join::any_of(["a", "b"], None);
        assert_eq!(none.fail("a"), None);
        assert_eq!(none.fail("b"), Some(Verdict::Failed));
    }

    #[test]
    fn degenerate_joins_are_decided_when_built() {
        assert_eq!(Join::all_of(Vec::<String>::new(), None).verdict(), Verdict::Succeeded);
        assert_eq!(Join::n_of(3, ["a", "b"], None).verdict(), Verdict::Failed);
        assert_eq!(Join::all_of(["a", "a"], None).branches.len(), 1, "a repeated name is one branch");
    }

    #[test]
    fn the_deadline_times_out_an_open_join_once() {
        let start = DateTime::<Utc>::from_timestamp_millis(1_000_000).expect("time");
        let mut join = Join::all_of(["a", "b"], Some(start + chrono::Duration::seconds(5)));
        assert_eq!(join.deadline("join").map(|d| d.at), Some(start + chrono::Duration::seconds(5)));
        assert_eq!(join.expire(start + chrono::Duration::seconds(4)), None);
        assert_eq!(join.expire(start + chrono::Duration::seconds(5)), Some(Verdict::TimedOut));
        assert_eq!(join.expire(start + chrono::Duration::seconds(6)), None);
        assert_eq!(join.succeed("a"), None);
        assert_eq!(join.verdict(), Verdict::TimedOut);
        let mut done = Join::all_of(["a"], Some(start));
        assert_eq!(done.succeed("a"), Some(Verdict::Succeeded));
        assert_eq!(done.expire(start), None, "a decided join does not time out");
    }

    #[test]
    fn a_join_survives_the_changelog() {
        let mut join = Join::n_of(2, ["a", "b", "c"], DateTime::<Utc>::from_timestamp_millis(5));
        join.fail("b");
        crate::changelog::check_state(join).unwrap_or_else(|e| panic!("{e}"));
    }
}
