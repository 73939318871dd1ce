//! The repository's schemas: every `.avsc` under `schemas/`, grouped into subjects with
//! ordered versions, plus the checks `herald schemas check` runs.
//!
//! Layout: `schemas/<namespace as folders>/<Type>/vN.avsc`, a `vN.sample.json` beside
//! each version, and `schemas/manifest.toml` (see [`crate::manifest`]). An `.avsc`
//! dropped anywhere else under `schemas/` is still loaded and becomes its own subject; the
//! check only warns that it is out of place. Two versions of one event type may not share
//! a fingerprint: data written with one could not be told from data written with the other.
//!
//! ```
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
//! let catalog = herald_schema::Catalog::load(&dir)?;
//! let placed = catalog.versions("shop.orders.OrderPlaced");
//! assert_eq!(placed[0].number, Some(1));
//! assert!(herald_schema::check_all(&dir)?.passed());
//! # Ok::<(), herald_schema::catalog::LoadError>(())
//! ```
//!
//! - [`Catalog`] (here): the folder loaded, by event type and by subject.
//! - [`Version`], [`Subject`]: one `vN.avsc`; a version chain and its mode.
//! - [`Problem`] and [`Severity`]: what is wrong with files, samples, the manifest.
//! - [`check_all`] and [`Catalog::check`] (`check.rs`): every chain and sample, into a
//!   [`Report`]; [`list`]: a [`Listing`] per subject.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use herald_bus::schema::Fingerprint;

use crate::avsc::{Avsc, ParseError};
use crate::manifest::{self, Manifest, ManifestError, Strategy};

mod check;
mod listing;
mod problem;
mod report;
mod subject;
mod version;

pub use check::check_all;
pub use listing::{Listing, list};
pub use problem::{Problem, Severity};
pub use report::{ChainViolation, Report, SubjectReport};
pub use subject::Subject;
pub use version::Version;
use version::version_number;

/// The schemas folder could not be loaded at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A folder could not be listed.
    #[error("{}: cannot read the schemas folder: {source}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is unreadable or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Every schema under a folder, by event type and by subject.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
    manifest: Manifest,
    types: BTreeMap<String, Vec<Version>>,
    subjects: Vec<Subject>,
    problems: Vec<Problem>,
}

impl Catalog {
    /// Loads every `.avsc` under `dir` and `dir/manifest.toml`.
    ///
    /// Only an unreadable folder or manifest is an error; a bad schema file becomes a
    /// [`Problem`] so every issue is reported at once.
    pub fn load(dir: impl AsRef<Path>) -> Result<Catalog, LoadError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::load(&dir)?;
        let mut files = Vec::new();
        collect(&dir, &mut files)?;
        files.sort();
        let mut catalog = Catalog { dir, manifest, types: BTreeMap::new(), subjects: Vec::new(), problems: Vec::new() };
        for path in files {
            catalog.add_file(path);
        }
        catalog.order_versions();
        catalog.derive_subjects();
        Ok(catalog)
    }

    fn add_file(&mut self, path: PathBuf) {
        let avsc = match Avsc::load(&path) {
            Ok(avsc) => avsc,
            Err(e) => return self.error(Some(path), e.to_string()),
        };
        let Some(name) = avsc.full_name().map(str::to_owned) else {
            return self.error(Some(path), "not a named type: an event schema must be a record".into());
        };
        let number = version_number(&path);
        let expected = self.dir.join(name.replace('.', "/"));
        if number.is_none() || path.parent() != Some(expected.as_path()) {
            let want = expected.join("vN.avsc");
            self.warn(Some(path.clone()), format!("`{name}` belongs at {}", want.display()));
        }
        self.types.entry(name).or_default().push(Version { number, path, avsc });
    }

    fn order_versions(&mut self) {
        let mut problems = Vec::new();
        for (name, versions) in &mut self.types {
            versions.sort_by(|a, b| (a.number, &a.path).cmp(&(b.number, &b.path)));
            if versions.len() > 1 && versions.iter().any(|v| v.number.is_none()) {
                let message = format!("`{name}` has several files and not all are named vN.avsc: their order is unknown");
                problems.push((Severity::Error, None, message));
            }
            for pair in versions.windows(2) {
                if pair[0].number.is_some() && pair[0].number == pair[1].number {
                    let message = format!("`{name}` {} is defined twice (also in {})", pair[1].label(), pair[0].path.display());
                    problems.push((Severity::Error, Some(pair[1].path.clone()), message));
                }
            }
            // A reader picks the writer's schema by fingerprint: two versions that share
            // one (they differ only in what the parsing canonical form drops) are
            // indistinguishable on the wire, and one would be read as the other.
            for (i, later) in versions.iter().enumerate().skip(1) {
                let fingerprint = later.fingerprint();
                if let Some(earlier) = versions[..i].iter().find(|v| v.fingerprint() == fingerprint) {
                    let message = format!(
                        "`{name}` {} has the same fingerprint {fingerprint} as {}: their parsing canonical forms are \
                         identical (they differ only in logical types, defaults, docs or aliases), so data written \
                         with one cannot be told from data written with the other",
                        later.label(),
                        earlier.label()
                    );
                    problems.push((Severity::Error, Some(later.path.clone()), message));
                }
            }
        }
        for (severity, path, message) in problems {
            self.problems.push(Problem { severity, path, message });
        }
    }

    fn derive_subjects(&mut self) {
        let mut covered = BTreeSet::new();
        let mut subjects = BTreeMap::new();
        let manifest_path = Some(self.dir.join(manifest::FILE_NAME));
        let mut problems = Vec::new();
        for (topic_name, topic) in &self.manifest.topics {
            if let Err(e) = manifest::check_topic_name(topic_name) {
                problems.push(Problem { severity: Severity::Error, path: manifest_path.clone(), message: e });
            }
            let strategy = self.manifest.strategy_of(topic);
            for type_name in &topic.events {
                if !self.types.contains_key(type_name) {
                    let message = format!("topic `{topic_name}` carries `{type_name}`, which has no .avsc");
                    problems.push(Problem { severity: Severity::Error, path: manifest_path.clone(), message });
                    continue;
                }
                covered.insert(type_name.clone());
                let name = strategy.subject(topic_name, type_name);
                let topic_of = (strategy == Strategy::TopicRecordName).then(|| topic_name.clone());
                let mode = self.manifest.mode_of(&name, Some(topic));
                subjects.entry(name.clone()).or_insert(Subject { name, type_name: type_name.clone(), topic: topic_of, mode });
            }
        }
        for type_name in self.types.keys().filter(|t| !covered.contains(*t)) {
            let mode = self.manifest.mode_of(type_name, None);
            subjects.insert(type_name.clone(), Subject { name: type_name.clone(), type_name: type_name.clone(), topic: None, mode });
        }
        for name in self.manifest.subjects.keys().filter(|s| !subjects.contains_key(*s)) {
            let message = format!("settings for subject `{name}`, which does not exist");
            problems.push(Problem { severity: Severity::Error, path: manifest_path.clone(), message });
        }
        self.subjects = subjects.into_values().collect();
        self.problems.extend(problems);
    }

    fn error(&mut self, path: Option<PathBuf>, message: String) {
        self.problems.push(Problem { severity: Severity::Error, path, message });
    }

    fn warn(&mut self, path: Option<PathBuf>, message: String) {
        self.problems.push(Problem { severity: Severity::Warning, path, message });
    }

    /// The folder this catalog was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest (empty when the folder has none).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every subject, sorted by name.
    pub fn subjects(&self) -> &[Subject] {
        &self.subjects
    }

    /// Every event type's full name, sorted.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// The versions of an event type, oldest first (empty when unknown).
    pub fn versions(&self, type_name: &str) -> &[Version] {
        self.types.get(type_name).map_or(&[], Vec::as_slice)
    }

    /// The newest version of an event type.
    pub fn latest(&self, type_name: &str) -> Option<&Version> {
        self.versions(type_name).last()
    }

    /// Problems found while loading (bad files, manifest references, misplaced files).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let folder = |source| LoadError::Folder { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(folder)? {
        let path = entry.map_err(folder)?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "avsc") {
            out.push(path);
        }
    }
    Ok(())
}

/// The fingerprint of one schema file: CRC-64-AVRO of its parsing canonical form. It
/// displays as lower-case hex of the 8 bytes in single-object-encoding (little-endian)
/// order, as fastavro and Java print it.
///
/// ```
/// let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/int.avsc");
/// assert_eq!(herald_schema::fingerprint(&file)?.to_string(), "8f5c393f1ad57572");
/// # Ok::<(), herald_schema::ParseError>(())
/// ```
pub fn fingerprint(file: impl AsRef<Path>) -> Result<Fingerprint, ParseError> {
    Ok(Avsc::load(file)?.fingerprint())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_versions_with_one_fingerprint_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/same-fingerprint");
        let catalog = Catalog::load(&dir).expect("the fixture loads");
        let versions = catalog.versions("demo.Stamped");
        assert_eq!(versions.len(), 2);
        let fingerprint = versions[0].fingerprint();
        assert_eq!(fingerprint, versions[1].fingerprint(), "the fixture's versions share a fingerprint");
        let errors: Vec<_> = catalog.problems().iter().filter(|p| p.severity == Severity::Error).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path.as_deref(), Some(versions[1].path.as_path()));
        assert_eq!(
            errors[0].message,
            format!(
                "`demo.Stamped` v2 has the same fingerprint {fingerprint} as v1: their parsing canonical \
                 forms are identical (they differ only in logical types, defaults, docs or aliases), so \
                 data written with one cannot be told from data written with the other"
            )
        );
        let report = catalog.check();
        assert!(!report.passed(), "{report}");
    }
}
