//! `schemas/manifest.toml`: which topic carries which event types, and each subject's
//! compatibility mode.
//!
//! ```toml
//! [defaults]
//! compatibility = "BACKWARD_TRANSITIVE"   # the default when omitted
//! strategy = "record-name"     # or "topic-record-name"; the default when omitted
//!
//! [topics."shop.orders"]
//! events = ["shop.orders.OrderPlaced", "shop.orders.OrderConfirmed"]
//! # strategy = "topic-record-name"   # per topic
//! # compatibility = "FULL"           # per topic
//!
//! [subjects."shop.orders.OrderPlaced"]
//! compatibility = "BACKWARD_TRANSITIVE"
//! ```
//!
//! The file is optional: without it every schema is its own subject (record-name
//! strategy) under `BACKWARD_TRANSITIVE`. Not Confluent's `BACKWARD`: a topic is replayed
//! from its start, so the newest schema must read every version ever written, not only
//! the one before it.
//!
//! ```
//! use herald_schema::manifest::{Manifest, Strategy};
//! use herald_schema::mode::Mode;
//! let m = Manifest::parse(r#"
//!     [topics."shop.orders"]
//!     events = ["shop.orders.OrderPlaced"]
//!     strategy = "topic-record-name"
//! "#)?;
//! let topic = &m.topics["shop.orders"];
//! assert_eq!(m.strategy_of(topic), Strategy::TopicRecordName);
//! assert_eq!(Strategy::TopicRecordName.subject("shop.orders", "shop.orders.OrderPlaced"), "shop.orders-shop.orders.OrderPlaced");
//! assert_eq!(m.defaults.compatibility, Mode::BackwardTransitive);
//! # Ok::<(), herald_schema::manifest::ManifestError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mode::Mode;

/// The file name, at the root of the schemas folder.
pub const FILE_NAME: &str = "manifest.toml";

/// The parsed manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Defaults for every subject.
    #[serde(default)]
    pub defaults: Defaults,
    /// Topics by name.
    #[serde(default)]
    pub topics: BTreeMap<String, Topic>,
    /// Per-subject settings, by subject name.
    #[serde(default)]
    pub subjects: BTreeMap<String, SubjectSettings>,
}

/// The `[defaults]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Mode of subjects that set none (default `BACKWARD_TRANSITIVE`, see the
    /// [module docs](self)).
    #[serde(default = "replayable")]
    pub compatibility: Mode,
    /// Subject naming (default record name).
    #[serde(default)]
    pub strategy: Strategy,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { compatibility: replayable(), strategy: Strategy::default() }
    }
}

/// The default mode: every version ever written stays readable by the newest.
fn replayable() -> Mode {
    Mode::BackwardTransitive
}

/// One `[topics."name"]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    /// Avro full names of the event types the topic carries.
    pub events: Vec<String>,
    /// Subject naming for this topic's events.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Mode for this topic's subjects.
    #[serde(default)]
    pub compatibility: Option<Mode>,
}

/// One `[subjects."name"]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectSettings {
    /// The subject's mode.
    pub compatibility: Mode,
}

/// How a subject is named, as Confluent's serializers name them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// `<record full name>`: one version chain per event type, whatever the topic.
    #[default]
    RecordName,
    /// `<topic>-<record full name>`: one chain per event type per topic.
    TopicRecordName,
}

impl Strategy {
    /// The subject name of `type_name` on `topic`.
    pub fn subject(self, topic: &str, type_name: &str) -> String {
        match self {
            Strategy::RecordName => type_name.to_owned(),
            Strategy::TopicRecordName => format!("{topic}-{type_name}"),
        }
    }
}

impl Manifest {
    /// Parses manifest text.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        toml::from_str(text).map_err(|e| ManifestError::Invalid { path: None, message: e.to_string() })
    }

    /// Reads `dir/manifest.toml`; a missing file is an empty manifest.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(source) => return Err(ManifestError::Read { path, source }),
        };
        Self::parse(&text).map_err(|e| match e {
            ManifestError::Invalid { message, .. } => ManifestError::Invalid { path: Some(path), message },
            other => other,
        })
    }

    /// The strategy that names `topic`'s subjects.
    pub fn strategy_of(&self, topic: &Topic) -> Strategy {
        topic.strategy.unwrap_or(self.defaults.strategy)
    }

    /// The mode of `subject`, which belongs to `topic` if any.
    pub fn mode_of(&self, subject: &str, topic: Option<&Topic>) -> Mode {
        self.subjects
            .get(subject)
            .map(|s| s.compatibility)
            .or_else(|| topic.and_then(|t| t.compatibility))
            .unwrap_or(self.defaults.compatibility)
    }
}

/// Checks a topic name against Kafka's rules: `[a-zA-Z0-9._-]`, 1 to 249 characters, and
/// not both `.` and `_` (they collide in metric names).
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("topic `{name}` must have 1 to 249 characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic `{name}` contains `{c}`; only [a-zA-Z0-9._-] are allowed"));
    }
    if name.contains('.') && name.contains('_') {
        return Err(format!("topic `{name}` mixes `.` and `_`, which collide in Kafka's metric names"));
    }
    Ok(())
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file exists but cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid manifest (the message gives line and column).
    #[error("{}: invalid manifest: {message}", path.as_ref().map_or_else(|| FILE_NAME.to_owned(), |p| p.display().to_string()))]
    Invalid {
        /// The file, when known.
        path: Option<PathBuf>,
        /// What is wrong, with its position.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_resolve_subject_then_topic_then_default() {
        let m = Manifest::parse(
            r#"
            defaults = { compatibility = "FULL" }
            [topics.a]
            events = ["x.A", "x.B"]
            compatibility = "FORWARD"
            [subjects."x.A"]
            compatibility = "NONE"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let topic = &m.topics["a"];
        assert_eq!(m.mode_of("x.A", Some(topic)), Mode::None);
        assert_eq!(m.mode_of("x.B", Some(topic)), Mode::Forward);
        assert_eq!(m.mode_of("x.C", None), Mode::Full);
    }

    #[test]
    fn typos_are_errors_with_a_position() {
        let err = Manifest::parse("[topics.a]\nevent = []\n").expect_err("unknown key");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Manifest::parse("[defaults]\ncompatibility = \"SIDEWAYS\"\n").expect_err("bad mode");
        assert!(err.to_string().contains("unknown compatibility mode"), "{err}");
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic_name("shop.orders").is_ok());
        assert!(check_topic_name("shop.orders_v2").is_err());
        assert!(check_topic_name("shop orders").is_err());
        assert!(check_topic_name(&"a".repeat(250)).is_err());
    }
}
