//! [`Version`]: one `vN.avsc` of an event type.

use std::path::{Path, PathBuf};

use herald_bus::schema::Fingerprint;

use crate::avsc::Avsc;
use crate::sample;

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

/// `N` of a file named `vN.avsc` (`N` ≥ 1).
pub(super) fn version_number(path: &Path) -> Option<u32> {
    let stem = path.file_stem()?.to_str()?;
    stem.strip_prefix('v')?.parse().ok().filter(|n| *n > 0)
}
