//! Deadlines: set by a reaction, stored with the state, fired once as an input.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A deadline a reaction asks for: at `at`, the participant gets [`Fired`] with this name
/// and payload, unless it was cancelled (by name) or the participant's part finished first.
///
/// Setting a deadline whose name is already pending for the same state key replaces it.
///
/// ```
/// use herald_choreography::Deadline;
/// let now = chrono::Utc::now();
/// let d = Deadline::after("payment-timeout", now, std::time::Duration::from_secs(30)).with_payload("o-1");
/// assert_eq!(d.at - now, chrono::Duration::seconds(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// Name, unique among the pending deadlines of one state key.
    pub name: String,
    /// When it comes due.
    pub at: DateTime<Utc>,
    /// Whatever the participant wants back when it fires.
    pub payload: String,
}

impl Deadline {
    /// A deadline at `at`, with an empty payload.
    pub fn at(name: impl Into<String>, at: DateTime<Utc>) -> Self {
        Deadline { name: name.into(), at, payload: String::new() }
    }

    /// A deadline `after` past `now`.
    pub fn after(name: impl Into<String>, now: DateTime<Utc>, after: std::time::Duration) -> Self {
        let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
        Deadline::at(name, now.checked_add_signed(after).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    /// The same deadline with `payload`.
    pub fn with_payload(mut self, payload: impl Into<String>) -> Self {
        self.payload = payload.into();
        self
    }
}

/// A deadline that came due: the input a participant registers with
/// [`Inputs::on_deadline`](crate::Inputs::on_deadline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The deadline's name.
    pub name: String,
    /// The deadline's payload.
    pub payload: String,
    /// When it was due (the reaction's `now` is this or later).
    pub at: DateTime<Utc>,
}

/// A deadline as stored with the state: what was asked plus the saga it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// What the reaction asked for.
    pub deadline: Deadline,
    /// Correlation id of the input whose reaction set it (the fired input carries it).
    pub correlation_id: String,
    /// Id of the input whose reaction set it (the fired input's causation id, and the seed
    /// of its deterministic id).
    pub set_by: Uuid,
}

impl Pending {
    /// Whether it is due at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.deadline.at <= now
    }

    /// The deterministic id of the input this deadline of the state key `key` becomes
    /// when it fires.
    pub fn fired_id(&self, key: &str) -> Uuid {
        crate::ids::deadline_id(self.set_by, key, &self.deadline.name, self.deadline.at.timestamp_millis())
    }
}
