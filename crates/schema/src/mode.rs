//! Compatibility modes over a version chain, as Confluent Schema Registry names them.
//!
//! | mode | the new schema must |
//! |---|---|
//! | `BACKWARD` (default) | read data written with the latest old version |
//! | `BACKWARD_TRANSITIVE` | read data written with every old version |
//! | `FORWARD` | be readable by the latest old version |
//! | `FORWARD_TRANSITIVE` | be readable by every old version |
//! | `FULL` | both, with the latest old version |
//! | `FULL_TRANSITIVE` | both, with every old version |
//! | `NONE` | nothing |
//!
//! ```
//! use herald_schema::{Avsc, mode::{self, Mode}};
//! let v1 = Avsc::parse(r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int"}]}"#)?;
//! let v2 = Avsc::parse(r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}"#)?;
//! // v2 adds a field without a default: old data lacks it.
//! assert!(mode::check(Mode::Forward, &[v1.clone()], &v2).is_ok());
//! let errors = mode::check(Mode::Backward, &[v1], &v2).unwrap_err();
//! assert_eq!(errors[0].to_string(), "new schema cannot read data written with old version 1: field `T.b`: reader field `b` is not in the writer and has no default");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::avsc::Avsc;
use crate::compat;

/// A compatibility mode; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// No check.
    None,
    /// New reads the latest old.
    #[default]
    Backward,
    /// New reads every old.
    BackwardTransitive,
    /// The latest old reads new.
    Forward,
    /// Every old reads new.
    ForwardTransitive,
    /// Backward and forward with the latest old.
    Full,
    /// Backward and forward with every old.
    FullTransitive,
}

impl Mode {
    /// Every mode, in the order of the table above.
    pub const ALL: [Mode; 7] = [
        Mode::Backward,
        Mode::BackwardTransitive,
        Mode::Forward,
        Mode::ForwardTransitive,
        Mode::Full,
        Mode::FullTransitive,
        Mode::None,
    ];

    /// The Confluent name, e.g. `BACKWARD_TRANSITIVE`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "NONE",
            Mode::Backward => "BACKWARD",
            Mode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Mode::Forward => "FORWARD",
            Mode::ForwardTransitive => "FORWARD_TRANSITIVE",
            Mode::Full => "FULL",
            Mode::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn backward(self) -> bool {
        matches!(self, Mode::Backward | Mode::BackwardTransitive | Mode::Full | Mode::FullTransitive)
    }

    fn forward(self) -> bool {
        matches!(self, Mode::Forward | Mode::ForwardTransitive | Mode::Full | Mode::FullTransitive)
    }

    fn transitive(self) -> bool {
        matches!(self, Mode::BackwardTransitive | Mode::ForwardTransitive | Mode::FullTransitive)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compatibility mode `{0}` (expected one of BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE)")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    /// Case-insensitive; `-` may stand for `_`.
    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        Mode::ALL.into_iter().find(|m| m.name() == wanted).ok_or_else(|| UnknownMode(s.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which way a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The new schema reads data of an old version (backward).
    NewReadsOld,
    /// An old version reads data of the new schema (forward).
    OldReadsNew,
}

/// One violation of a mode: which old version, which direction, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index into the `old` slice given to [`check`] (0 = oldest).
    pub old_index: usize,
    /// A label for that version (its file, or `old version N`).
    pub old_label: String,
    /// Which way the failing read goes.
    pub direction: Direction,
    /// The broken rule and where.
    pub violation: compat::Violation,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.direction {
            Direction::NewReadsOld => {
                write!(f, "new schema cannot read data written with {}: {}", self.old_label, self.violation)
            }
            Direction::OldReadsNew => {
                write!(f, "{} cannot read data written with the new schema: {}", self.old_label, self.violation)
            }
        }
    }
}

/// Checks `new` against the chain `old` (oldest first) under `mode`.
///
/// Every violation is returned, for every old version the mode checks against.
pub fn check(mode: Mode, old: &[Avsc], new: &Avsc) -> Result<(), Vec<Violation>> {
    let against: &[Avsc] = match old.split_last() {
        Some(_) if mode.transitive() => old,
        Some((latest, _)) => std::slice::from_ref(latest),
        None => &[],
    };
    let first = old.len() - against.len();
    let mut out = Vec::new();
    for (offset, version) in against.iter().enumerate() {
        let index = first + offset;
        let label = match version.origin() {
            Some(path) => path.display().to_string(),
            None => format!("old version {}", index + 1),
        };
        let mut record = |direction, result: Result<(), compat::Incompatibility>| {
            if let Err(e) = result {
                out.extend(e.violations.into_iter().map(|violation| Violation {
                    old_index: index,
                    old_label: label.clone(),
                    direction,
                    violation,
                }));
            }
        };
        if mode.backward() {
            record(Direction::NewReadsOld, compat::can_read(new, version));
        }
        if mode.forward() {
            record(Direction::OldReadsNew, compat::can_read(version, new));
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Avsc {
        Avsc::parse(&format!(r#"{{"type":"record","name":"T","fields":[{fields}]}}"#)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_parse_leniently() {
        assert_eq!("backward-transitive".parse(), Ok(Mode::BackwardTransitive));
        assert_eq!("FULL".parse(), Ok(Mode::Full));
        assert!("sideways".parse::<Mode>().is_err());
        assert_eq!(Mode::default(), Mode::Backward);
    }

    #[test]
    fn transitive_modes_check_every_old_version() {
        // v1 has `a`; v2 drops it (with nothing required); v3 requires `a` again.
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        let v2 = record("");
        let v3 = record(r#"{"name":"a","type":"int"}"#);
        let old = [v1, v2];
        // v3 can read v1, but not v2 (which lacks `a`): BACKWARD checks only v2.
        let errors = check(Mode::Backward, &old, &v3).expect_err("v2 lacks a");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].old_index, 1);
        assert_eq!(check(Mode::BackwardTransitive, &old, &v3).expect_err("v2").len(), 1);
        assert!(check(Mode::Forward, &old, &v3).is_ok());
        assert!(check(Mode::ForwardTransitive, &old, &v3).is_ok());
        assert_eq!(check(Mode::Full, &old, &v3).expect_err("backward part").len(), 1);
        assert!(check(Mode::None, &old, &v3).is_ok());
    }

    #[test]
    fn forward_transitive_reaches_the_oldest() {
        // v1 requires `a`, v2 gives it a default, v3 drops it: v2 reads v3, v1 cannot.
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        let v2 = record(r#"{"name":"a","type":"int","default":0}"#);
        let v3 = record("");
        let old = [v1, v2];
        assert!(check(Mode::Forward, &old, &v3).is_ok());
        let errors = check(Mode::ForwardTransitive, &old, &v3).expect_err("v1 needs a");
        assert_eq!((errors[0].old_index, errors[0].direction), (0, Direction::OldReadsNew));
        assert!(check(Mode::FullTransitive, &old, &v3).is_err());
    }

    #[test]
    fn a_first_version_has_nothing_to_break() {
        assert!(check(Mode::FullTransitive, &[], &record("")).is_ok());
    }
}
