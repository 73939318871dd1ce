//! [`Listing`]: the subjects and versions `herald schemas list` prints.

use std::path::Path;

use super::{Catalog, LoadError, Subject, Version};

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
