//! What the engine keeps per aggregate in its changelog: the state, its version, and the
//! replies of the commands it decided most recently.

use apache_avro::schema::Schema;
use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::reply::CommandReply;

/// One aggregate as stored: the state folded from its events, the number of its events
/// (its version), and the last [`Aggregate::REMEMBERED`](crate::Aggregate::REMEMBERED)
/// replies, oldest first.
///
/// ```
/// use herald_aggregate::Stored;
/// let stored: Stored<i64> = Stored::default();
/// assert_eq!((stored.version, stored.recent.len()), (0, 0));
/// assert!(stored.reply_to("c-1").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored<S> {
    /// The aggregate's state.
    pub state: S,
    /// How many events it has (0 before the first).
    pub version: i64,
    /// The replies of its most recent commands, oldest first.
    pub recent: Vec<CommandReply>,
}

impl<S> Stored<S> {
    /// The reply already given to command `command_id`, if it is among the recent ones.
    pub fn reply_to(&self, command_id: &str) -> Option<&CommandReply> {
        self.recent.iter().rev().find(|r| r.command_id == command_id)
    }

    /// Remembers `reply`, forgetting the oldest beyond `keep`.
    pub fn remember(&mut self, reply: CommandReply, keep: usize) {
        self.recent.push(reply);
        if self.recent.len() > keep {
            let excess = self.recent.len() - keep;
            self.recent.drain(..excess);
        }
    }
}

/// `herald.aggregate.Stored`: the state's own schema inside.
impl<S: AvroSchema> AvroSchema for Stored<S> {
    fn get_schema() -> Schema {
        let state = serde_json::to_value(S::get_schema()).unwrap_or(serde_json::Value::Null);
        let reply: serde_json::Value = serde_json::from_str(<CommandReply as herald_bus::Event>::SCHEMA).unwrap_or(serde_json::Value::Null);
        let record = serde_json::json!({
            "type": "record", "name": "Stored", "namespace": "herald.aggregate",
            "fields": [
                {"name": "state", "type": state},
                {"name": "version", "type": "long"},
                {"name": "recent", "type": {"type": "array", "items": reply}},
            ]
        });
        // Both parts are schemas of Rust types (checked in this crate's tests and by the
        // engine's StateCodec at start-up): a failure here is a programming error.
        Schema::parse(&record).expect("the stored aggregate's schema is valid Avro")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, apache_avro::AvroSchema)]
    struct Balance {
        cents: i64,
        owner: Option<String>,
    }

    #[test]
    fn it_round_trips_through_the_engine_changelog_codec() {
        let codec = herald_choreography::changelog::StateCodec::<Stored<Balance>>::new().expect("schema");
        let mut stored = Stored { state: Balance { cents: 5, owner: Some("c".into()) }, version: 2, recent: Vec::new() };
        stored.remember(CommandReply::accepted("c-1", "a", 2, vec!["e".into()]), 2);
        stored.remember(CommandReply::rejected("c-2", "a", "x", "y"), 2);
        let slot = herald_choreography::slot::Slot::new(stored.clone());
        let back = codec.decode(&codec.encode(&slot).expect("encodes")).expect("decodes");
        assert_eq!(back.state(), &stored);
    }

    #[test]
    fn it_remembers_a_bounded_number_of_replies() {
        let mut stored = Stored::<i64>::default();
        for i in 0..5 {
            stored.remember(CommandReply::accepted(format!("c-{i}"), "a", i, Vec::new()), 3);
        }
        let ids: Vec<&str> = stored.recent.iter().map(|r| r.command_id.as_str()).collect();
        assert_eq!(ids, ["c-2", "c-3", "c-4"]);
        assert!(stored.reply_to("c-1").is_none());
        assert_eq!(stored.reply_to("c-3").and_then(|r| r.version), Some(3));
    }
}
