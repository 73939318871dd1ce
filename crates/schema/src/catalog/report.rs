//! [`Report`]: what `herald schemas check` found, subject by subject.

use std::fmt;

use super::{Problem, Severity, Subject};
use crate::mode;

/// What `herald schemas check` found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Number of schema files loaded.
    pub schemas: usize,
    /// One entry per subject.
    pub subjects: Vec<SubjectReport>,
    /// Problems with files, samples and the manifest (errors first).
    pub problems: Vec<Problem>,
}

/// The check of one subject's version chain.
#[derive(Debug, Clone)]
pub struct SubjectReport {
    /// The subject.
    pub subject: Subject,
    /// Its versions, oldest first (`v1`, `v2`, ...).
    pub versions: Vec<String>,
    /// Every violation of the subject's mode along the chain.
    pub violations: Vec<ChainViolation>,
}

/// A version that broke its subject's mode when it was added.
#[derive(Debug, Clone)]
pub struct ChainViolation {
    /// The version that broke it (`v3`).
    pub version: String,
    /// Against which older version, which way, and why.
    pub violation: mode::Violation,
}

impl Report {
    /// True when no subject has a violation and no problem is an error.
    pub fn passed(&self) -> bool {
        self.subjects.iter().all(|s| s.violations.is_empty()) && self.problems.iter().all(|p| p.severity == Severity::Warning)
    }

    /// Every violation, with its subject.
    pub fn violations(&self) -> impl Iterator<Item = (&Subject, &ChainViolation)> {
        self.subjects.iter().flat_map(|s| s.violations.iter().map(move |v| (&s.subject, v)))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.subjects {
            let status = if s.violations.is_empty() { "ok  " } else { "FAIL" };
            writeln!(f, "{status} {} ({}) {}", s.subject.name, s.subject.mode, s.versions.join(" "))?;
            for v in &s.violations {
                writeln!(f, "     {}: {}", v.version, v.violation)?;
            }
        }
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        let violations = self.violations().count();
        let errors = self.problems.iter().filter(|p| p.severity == Severity::Error).count();
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        write!(
            f,
            "{verdict}: {} subjects, {} schemas, {violations} violations, {errors} errors",
            self.subjects.len(),
            self.schemas
        )
    }
}
