//! Subject name strategies: under which subject a topic's schemas are registered.

use std::str::FromStr;

/// How a subject name is derived from the topic and the record's full name.
///
/// The same three strategies as Confluent's serializers; pick the one the other
/// producers and consumers of the topic use.
///
/// ```
/// use herald_registry::SubjectStrategy;
/// let name = "shop.orders.OrderPlaced";
/// assert_eq!(SubjectStrategy::RecordName.subject("orders", name), "shop.orders.OrderPlaced");
/// assert_eq!(SubjectStrategy::TopicName.subject("orders", name), "orders-value");
/// assert_eq!(SubjectStrategy::TopicRecordName.subject("orders", name), "orders-shop.orders.OrderPlaced");
/// assert_eq!("topic-record-name".parse::<SubjectStrategy>(), Ok(SubjectStrategy::TopicRecordName));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectStrategy {
    /// `<record full name>` (default): one subject per event type, shared by every topic
    /// that carries it. Fits topics with several event types, as Herald's families have.
    #[default]
    RecordName,
    /// `<topic>-value`: one subject per topic (Confluent's default). With several event
    /// types on one topic, the subject's compatibility must be `NONE`.
    TopicName,
    /// `<topic>-<record full name>`: one subject per topic and event type.
    TopicRecordName,
}

impl SubjectStrategy {
    /// The subject of a value with the record `record_name` on `topic`.
    pub fn subject(&self, topic: &str, record_name: &str) -> String {
        match self {
            SubjectStrategy::RecordName => record_name.to_owned(),
            SubjectStrategy::TopicName => format!("{topic}-value"),
            SubjectStrategy::TopicRecordName => format!("{topic}-{record_name}"),
        }
    }
}

/// A strategy name that is not one of `record-name`, `topic-name`, `topic-record-name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown subject strategy {0:?}: expected record-name, topic-name or topic-record-name")]
pub struct UnknownStrategy(pub String);

impl FromStr for SubjectStrategy {
    type Err = UnknownStrategy;

    /// Parses the kebab-case name, or Confluent's class names (`RecordNameStrategy`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s.rsplit('.').next().unwrap_or(s);
        match short {
            "record-name" | "RecordNameStrategy" => Ok(SubjectStrategy::RecordName),
            "topic-name" | "TopicNameStrategy" => Ok(SubjectStrategy::TopicName),
            "topic-record-name" | "TopicRecordNameStrategy" => Ok(SubjectStrategy::TopicRecordName),
            _ => Err(UnknownStrategy(s.to_owned())),
        }
    }
}
