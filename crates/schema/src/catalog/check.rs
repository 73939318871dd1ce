//! `herald schemas check`: every sample and every version chain of a [`Catalog`], checked
//! against its subject's mode, into a [`Report`].

use std::path::Path;

use super::{Catalog, ChainViolation, LoadError, Problem, Report, Severity, SubjectReport, Version};
use crate::avsc::Avsc;
use crate::mode;
use crate::sample::Sample;

impl Catalog {
    /// Checks every version chain against its subject's mode, and every sample.
    pub fn check(&self) -> Report {
        let mut problems = self.problems.clone();
        for version in self.types.values().flatten() {
            let path = version.sample_path();
            if !path.exists() {
                problems.push(Problem {
                    severity: Severity::Warning,
                    path: Some(version.path.clone()),
                    message: format!("no sample event ({} is missing)", path.display()),
                });
            } else if let Err(e) = Sample::load(&version.avsc, &path) {
                problems.push(Problem { severity: Severity::Error, path: Some(path), message: e.reason });
            }
        }
        let subjects = self
            .subjects
            .iter()
            .map(|subject| {
                let versions = self.versions(&subject.type_name);
                let schemas: Vec<Avsc> = versions.iter().map(|v| v.avsc.clone()).collect();
                let mut violations = Vec::new();
                for i in 1..schemas.len() {
                    if let Err(found) = mode::check(subject.mode, &schemas[..i], &schemas[i]) {
                        violations.extend(found.into_iter().map(|violation| ChainViolation {
                            version: versions[i].label(),
                            violation,
                        }));
                    }
                }
                SubjectReport { subject: subject.clone(), versions: versions.iter().map(Version::label).collect(), violations }
            })
            .collect();
        problems.sort_by_key(|p| p.severity);
        Report { schemas: self.types.values().map(Vec::len).sum(), subjects, problems }
    }
}

/// Loads `dir` and checks every schema, sample and version chain.
///
/// ```
/// let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
/// let report = herald_schema::check_all(&dir)?;
/// assert!(report.passed(), "{report}");
/// # Ok::<(), herald_schema::catalog::LoadError>(())
/// ```
pub fn check_all(dir: impl AsRef<Path>) -> Result<Report, LoadError> {
    Ok(Catalog::load(dir)?.check())
}
