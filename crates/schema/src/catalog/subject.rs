//! [`Subject`]: a version chain with the compatibility mode it evolves under.

use crate::mode::Mode;

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
