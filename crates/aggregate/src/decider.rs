//! The adapter that runs an [`Aggregate`] as a choreography [`Participant`]: state key =
//! the command's key (the aggregate id), state = [`Stored`], one reaction per command.

use chrono::{DateTime, Utc};
use herald_bus::{EventFamily, Metadata};
use herald_choreography::declaration::Output;
use herald_choreography::emit::Emitted;
use herald_choreography::input::Extensions;
use herald_choreography::{ids, Inputs, Participant, Reaction};
use uuid::Uuid;

use crate::aggregate::{Aggregate, CONFLICT};
use crate::headers;
use crate::reply::{reply_topic, CommandReply, Replies};
use crate::stored::Stored;

/// The reason of a rejection for a command whose `ce_expectedversion` is not a number.
pub const INVALID_EXPECTED_VERSION: &str = "invalid-expected-version";

/// The reason of a rejection for a decision that returned an event of another aggregate.
pub const INVALID_DECISION: &str = "invalid-decision";

/// A command as delivered: the command, its id (`ce_id`), the reply topic it names and the
/// version it expects.
#[derive(Debug)]
pub struct Delivered<C> {
    /// The command.
    pub command: C,
    /// Its `ce_id`.
    pub id: Uuid,
    /// Its `ce_replyto`, when present.
    pub reply_to: Option<String>,
    /// Its `ce_expectedversion`: `Ok(None)` when absent, `Err(text)` when not a number.
    pub expected_version: Result<Option<i64>, String>,
}

impl<C> Delivered<C> {
    /// Reads the command's headers (the input mapping of [`Decider::inputs`]).
    pub fn read(command: C, meta: &Metadata, ext: &Extensions) -> Self {
        let expected_version = match ext.get(headers::EXPECTED_VERSION) {
            None => Ok(None),
            Some(text) => text.trim().parse::<i64>().map(Some).map_err(|_| text.to_owned()),
        };
        Delivered { command, id: meta.id, reply_to: ext.get(headers::REPLY_TO).map(str::to_owned), expected_version }
    }
}

/// `aggregate` as a choreography participant: run it with
/// [`herald_choreography::engine::Engine`] (see the [crate docs](crate)).
///
/// Each command is one reaction. A command whose id is among the aggregate's recent
/// replies gets that reply again and changes nothing. Otherwise an `expected_version`
/// that differs from the version is rejected with [`CONFLICT`]; then the aggregate's
/// `decide` runs; accepted events are folded with `evolve`, numbered from version + 1
/// (`ce_sequence`), and written to [`Aggregate::EVENTS`] keyed by the aggregate id. The
/// reply goes to the command's `ce_replyto` topic (none without one), and is remembered.
#[derive(Debug, Clone, Default)]
pub struct Decider<A>(pub A);

/// Whether `name` is a legal Kafka topic name.
fn legal_topic(name: &str) -> bool {
    !name.is_empty() && name.len() <= 249 && name != "." && name != ".." && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The outcome of one command: its reply and, when accepted, the state after its events
/// and the events.
type Outcome<A> = (CommandReply, Option<(<A as Aggregate>::State, Vec<<A as Aggregate>::Event>)>);

impl<A: Aggregate> Decider<A> {
    /// The outcome of a command not seen before: the reply and, accepted, the new stored
    /// aggregate and its events. Event `i` gets id `ids::event_id(NAME, command id, first + i)`.
    fn outcome(&self, stored: &Stored<A::State>, input: Delivered<A::Command>, first: u32) -> Outcome<A> {
        let command_id = input.id.to_string();
        let aggregate_id = input.command.aggregate_id().to_owned();
        match input.expected_version {
            Err(text) => return (CommandReply::rejected(command_id, aggregate_id, INVALID_EXPECTED_VERSION, format!("{} {text:?} is not a number", headers::EXPECTED_VERSION)), None),
            Ok(Some(expected)) if expected != stored.version => {
                return (CommandReply::rejected(command_id, aggregate_id, CONFLICT, format!("expected version {expected}, the aggregate is at {}", stored.version)), None);
            }
            Ok(_) => {}
        }
        let events = match self.0.decide(&stored.state, input.command) {
            Ok(events) => events,
            Err(rejection) => return (CommandReply::rejected(command_id, aggregate_id, rejection.reason, rejection.message), None),
        };
        if let Some(stray) = events.iter().find(|e| e.aggregate_id() != aggregate_id) {
            let message = format!("the decision returned {} for aggregate {:?}", stray.type_name(), stray.aggregate_id());
            return (CommandReply::rejected(command_id, aggregate_id, INVALID_DECISION, message), None);
        }
        let state = events.iter().fold(stored.state.clone(), |state, event| self.0.evolve(state, event));
        let version = stored.version + events.len() as i64;
        let event_ids = (0..events.len()).map(|i| ids::event_id(A::NAME, input.id, first + i as u32).to_string()).collect();
        (CommandReply::accepted(command_id, aggregate_id, version, event_ids), Some((state, events)))
    }
}

impl<A: Aggregate> Participant for Decider<A> {
    const NAME: &'static str = A::NAME;
    type Input = Delivered<A::Command>;
    type State = Stored<A::State>;

    fn inputs(&self) -> Inputs<Self::Input> {
        Inputs::by_subject().on_with_headers(&A::COMMANDS, Delivered::read)
    }

    fn outputs(&self) -> Vec<Output> {
        let events = A::Event::TYPES.iter().map(|t| Output::untyped(A::EVENTS.name(), t, true).after(A::Command::TYPES).terminal());
        events.chain([Output::to_named_topic::<CommandReply, Replies>().after(A::Command::TYPES)]).collect()
    }

    fn decide(&self, stored: &Self::State, input: Self::Input, _now: DateTime<Utc>) -> Reaction<Self::State> {
        // The reply (when there is a topic for it) is emitted first, so its id is the same
        // whether the command is decided now or answered again from memory.
        let reply_to = input.reply_to.clone().filter(|t| legal_topic(t));
        let reply = |reply: CommandReply| reply_to.as_ref().map(|t| Emitted::new(&reply_topic(t.clone()), reply).exact_topic());
        if let Some(earlier) = stored.reply_to(&input.id.to_string()) {
            return reply(earlier.clone()).into_iter().fold(Reaction::keep(), Reaction::push);
        }
        let first = u32::from(reply_to.is_some());
        let (answer, accepted) = self.outcome(stored, input, first);
        let mut next = Stored { state: stored.state.clone(), version: stored.version, recent: stored.recent.clone() };
        let mut events = Vec::new();
        if let Some((state, accepted)) = accepted {
            for event in accepted {
                next.version += 1;
                events.push(Emitted::of_family(&A::EVENTS, event).with_header(headers::SEQUENCE, next.version.to_string()));
            }
            next.state = state;
        }
        next.remember(answer.clone(), A::REMEMBERED);
        let reaction = reply(answer).into_iter().fold(Reaction::with_state(next), Reaction::push);
        events.into_iter().fold(reaction, Reaction::push)
    }
}

#[cfg(test)]
mod tests {
    use super::legal_topic;

    #[test]
    fn reply_topics_must_be_legal_kafka_names() {
        assert!(legal_topic("shop.accounts.replies"));
        assert!(legal_topic("client_7-replies"));
        assert!(!legal_topic(""));
        assert!(!legal_topic(".."));
        assert!(!legal_topic("a b"));
        assert!(!legal_topic(&"x".repeat(250)));
    }
}
