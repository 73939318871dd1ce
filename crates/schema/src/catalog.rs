//! The repository's schemas: every `.avsc` under `schemas/`, grouped into subjects with
//! ordered versions, plus the checks `herald schemas check` runs.
//!
//! Layout: `schemas/<namespace as folders>/<Type>/vN.avsc`, a `vN.sample.json` beside
//! each version, and `schemas/manifest.toml` (see [`crate::manifest`]). An `.avsc`
//! dropped anywhere else under `schemas/` is still loaded and becomes its own subject; the
//! check only warns that it is out of place.
//!
//! ```
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
//! let catalog = herald_schema::Catalog::load(&dir)?;
//! let placed = catalog.versions("shop.orders.OrderPlaced");
//! assert_eq!(placed[0].number, Some(1));
//! assert!(herald_schema::check_all(&dir)?.passed());
//! # Ok::<(), herald_schema::catalog::LoadError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use herald_bus::schema::Fingerprint;

use crate::avsc::{Avsc, ParseError};
use crate::manifest::{self, Manifest, ManifestError, Strategy};
use crate::mode::{self, Mode};
use crate::sample::{self, Sample};

/// One version of one event type.
#[derive(Debug, Clone)]
pub struct Version {
    /// `N` of `vN.avsc`; `None` for a file named otherwise.
    pub number: Option<u32>,
    /// The file.
    pub path: PathBuf,
    /// The parsed schema.
    pub avsc: Avsc,
}

impl Version {
    /// `v3`, or the file name for an unnumbered file.
    pub fn label(&self) -> String {
        match self.number {
            Some(n) => format!("v{n}"),
            None => self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }

    /// The fingerprint of this version.
    pub fn fingerprint(&self) -> Fingerprint {
        self.avsc.fingerprint()
    }

    /// Where this version's sample event lives.
    pub fn sample_path(&self) -> PathBuf {
        sample::path_for(&self.path)
    }
}

/// A subject: a version chain with a compatibility mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The subject name (record name, or `<topic>-<record name>`).
    pub name: String,
    /// The event type's full name.
    pub type_name: String,
    /// The topic, for the topic-record-name strategy.
    pub topic: Option<String>,
    /// The mode new versions are checked under.
    pub mode: Mode,
}

/// Something wrong (or odd) in the schemas folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Errors fail the check; warnings do not.
    pub severity: Severity,
    /// The file concerned, if any.
    pub path: Option<PathBuf>,
    /// What is wrong.
    pub message: String,
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fails `check`.
    Error,
    /// Reported only.
    Warning,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.path {
            // Parse errors already start with their file.
            Some(path) if !self.message.starts_with(&path.display().to_string()) => {
                write!(f, "{level}: {}: {}", path.display(), self.message)
            }
            _ => write!(f, "{level}: {}", self.message),
        }
    }
}

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

fn version_number(path: &Path) -> Option<u32> {
    let stem = path.file_stem()?.to_str()?;
    stem.strip_prefix('v')?.parse().ok().filter(|n| *n > 0)
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

/// One subject and its versions, as `herald schemas list` prints them.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The subject.
    pub subject: Subject,
    /// Its versions, oldest first.
    pub versions: Vec<Version>,
}

/// Lists every subject under `dir` with its versions and their fingerprints.
///
/// ```
/// let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
/// let listing = herald_schema::list(&dir)?;
/// assert!(listing.iter().any(|l| l.subject.name == "shop.orders.OrderPlaced"));
/// # Ok::<(), herald_schema::catalog::LoadError>(())
/// ```
pub fn list(dir: impl AsRef<Path>) -> Result<Vec<Listing>, LoadError> {
    let catalog = Catalog::load(dir)?;
    Ok(catalog
        .subjects()
        .iter()
        .map(|s| Listing { subject: s.clone(), versions: catalog.versions(&s.type_name).to_vec() })
        .collect())
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
