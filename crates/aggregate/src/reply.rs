//! The reply to a command: `herald.aggregate.CommandReply` on the reply topic the command
//! named (`ce_replyto`), keyed by the command's id.

use apache_avro::AvroSchema;
use herald_bus::Topic;
use serde::{Deserialize, Serialize};

/// Whether the command was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "herald.aggregate")]
#[serde(rename_all = "lowercase")]
#[avro(rename_all = "lowercase")]
pub enum Outcome {
    /// Decided: its events (maybe none) are written.
    Accepted,
    /// Refused: nothing was written but this reply.
    Rejected,
}

/// The outcome of one command (schema `schemas/herald/aggregate/CommandReply/v1.avsc`).
///
/// ```
/// use herald_aggregate::{CommandReply, Outcome};
/// let reply = CommandReply::rejected("cmd-1", "acct-7", "insufficient-funds", "balance 5 < 7");
/// assert_eq!(reply.outcome, Outcome::Rejected);
/// assert_eq!(reply.reason.as_deref(), Some("insufficient-funds"));
/// assert!(!reply.is_accepted());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "herald.aggregate")]
pub struct CommandReply {
    /// The command's id (its `ce_id`; also the reply's Kafka key).
    pub command_id: String,
    /// The aggregate it was for (the command's Kafka key).
    pub aggregate_id: String,
    /// Accepted or rejected.
    pub outcome: Outcome,
    /// Accepted: the aggregate's version after the command's events.
    pub version: Option<i64>,
    /// Accepted: the `ce_id` of each event, in order.
    pub event_ids: Vec<String>,
    /// Rejected: [`CONFLICT`](crate::CONFLICT) or the domain's reason.
    pub reason: Option<String>,
    /// Rejected: a human-readable explanation.
    pub message: Option<String>,
}

impl CommandReply {
    /// An accepted reply: the aggregate is at `version` after the events `event_ids`.
    pub fn accepted(command_id: impl Into<String>, aggregate_id: impl Into<String>, version: i64, event_ids: Vec<String>) -> Self {
        CommandReply { command_id: command_id.into(), aggregate_id: aggregate_id.into(), outcome: Outcome::Accepted, version: Some(version), event_ids, reason: None, message: None }
    }

    /// A rejected reply with `reason` and `message`.
    pub fn rejected(command_id: impl Into<String>, aggregate_id: impl Into<String>, reason: impl Into<String>, message: impl Into<String>) -> Self {
        CommandReply { command_id: command_id.into(), aggregate_id: aggregate_id.into(), outcome: Outcome::Rejected, version: None, event_ids: Vec::new(), reason: Some(reason.into()), message: Some(message.into()) }
    }

    /// Whether the command was accepted.
    pub fn is_accepted(&self) -> bool {
        self.outcome == Outcome::Accepted
    }
}

impl herald_bus::Event for CommandReply {
    const TYPE: &'static str = "herald.aggregate.CommandReply";
    const SCHEMA: &'static str = include_str!("../../../schemas/herald/aggregate/CommandReply/v1.avsc");

    /// The command's id: replies are keyed by it.
    #[allow(clippy::misnamed_getters)]
    fn aggregate_id(&self) -> &str {
        &self.command_id
    }
}

herald_bus::family! {
    /// Every event on a reply topic: [`CommandReply`].
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[serde(untagged)]
    pub enum Replies {
        /// See [`CommandReply`].
        Reply(CommandReply),
    }
}

/// The reply topic `name` (chosen at run time; the command names it in `ce_replyto`).
pub fn reply_topic(name: impl Into<String>) -> Topic<Replies> {
    Topic::named(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_matches_its_schema_file() {
        herald_bus::event::check_schema::<CommandReply>().expect("CommandReply matches its .avsc");
    }

    #[test]
    fn a_reply_encodes_with_its_schema_and_reads_back() {
        use herald_bus::EventFamily;
        let reply = CommandReply::accepted("c-1", "a-1", 3, vec!["e-1".into(), "e-2".into()]);
        let known = Replies::schemas().latest(<CommandReply as herald_bus::Event>::TYPE).expect("schema");
        let mut datum = Vec::new();
        herald_bus::publisher::encode_datum(known, &Replies::Reply(reply.clone()), &mut datum).expect("encodes");
        let back = Replies::decode(&known.name, known, &datum).expect("decodes");
        assert_eq!(back, Some(Replies::Reply(reply)));
    }
}
