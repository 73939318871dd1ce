//! The adapter that runs an [`Aggregate`] as a choreography [`Participant`]: state key =
//! the command's key (the aggregate id), state = [`Stored`], one reaction per command.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_bus::{EventFamily, Metadata};
use herald_choreography::declaration::Output;
use herald_choreography::emit::Emitted;
use herald_choreography::input::Extensions;
use herald_choreography::{Inputs, Participant, Reaction};
use uuid::Uuid;

use crate::aggregate::{Aggregate, CONFLICT};
use crate::headers;
use crate::reply::{reply_topic, CommandReply, Replies};
use crate::stored::{event_id, Answer, EventIds, Remembered, Stored};

/// The reason of a rejection for a command whose `ce_expectedversion` is not a version (a
/// decimal number from 0, digits only).
pub const INVALID_EXPECTED_VERSION: &str = "invalid-expected-version";

/// The reason of a rejection for a decision that returned an event of another aggregate,
/// or one that its schema refuses (a bug in `decide`: no retry helps).
pub const INVALID_DECISION: &str = "invalid-decision";

/// A command as delivered: the command, its id (`ce_id`), the reply topic it names and the
/// version it expects.
#[derive(Debug)]
pub struct Delivered<C> {
    /// The command.
    pub command: C,
    /// Its id: its `ce_id`, or the UUID Herald maps a non-UUID `ce_id` to
    /// ([`Metadata::id_of`]), or for a record without `ce_id` the UUID of its place in the
    /// log ([`Metadata::identify_by_position`]): what the aggregate remembers it by.
    pub id: Uuid,
    /// Its `ce_id` as the sender wrote it, when that is not `id` in canonical form (a
    /// client that is not Herald's may use any string): the reply's `command_id` and key.
    pub original_id: Option<String>,
    /// Its `ce_replyto`, when present.
    pub reply_to: Option<String>,
    /// Its `ce_expectedversion`: `Ok(None)` when absent, `Err(text)` when not a version
    /// (digits only: no sign, no spaces).
    pub expected_version: Result<Option<i64>, String>,
}

impl<C> Delivered<C> {
    /// Reads the command's headers (the input mapping of [`Decider::inputs`]).
    pub fn read(command: C, meta: &Metadata, ext: &Extensions) -> Self {
        let expected_version = match ext.get(headers::EXPECTED_VERSION) {
            None => Ok(None),
            Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse::<i64>().map(Some).map_err(|_| text.to_owned()),
            Some(text) => Err(text.to_owned()),
        };
        Delivered { command, id: meta.id, original_id: meta.original_id.clone(), reply_to: ext.get(headers::REPLY_TO).map(str::to_owned), expected_version }
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
/// reply goes to the command's `ce_replyto` topic (none without one), keyed by and naming
/// the command's `ce_id` as it was sent (any string: it need not be a UUID), and is
/// remembered. A reply topic that is not a legal Kafka name gets no reply; one that is
/// the aggregate's own (its changelog, commands or events topic) or does not exist gets
/// none either: the engine drops it with an error log and
/// `herald_choreography_outputs_dropped_total`.
#[derive(Debug, Clone, Default)]
pub struct Decider<A>(pub A);

/// Whether `name` is a legal Kafka topic name.
fn legal_topic(name: &str) -> bool {
    !name.is_empty() && name.len() <= 249 && name != "." && name != ".." && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The outcome of one command: its reply, what is remembered of it, and, when accepted,
/// the state after its events and the events.
struct Outcome<A: Aggregate> {
    reply: CommandReply,
    answer: Answer,
    accepted: Option<(A::State, Vec<A::Event>)>,
}

impl<A: Aggregate> Outcome<A> {
    fn rejected(command: Uuid, aggregate_id: String, reason: String, message: String) -> Self {
        let reply = CommandReply::rejected(command.to_string(), aggregate_id, reason.clone(), message.clone());
        Outcome { reply, answer: Answer::Rejected(Arc::new((reason, message))), accepted: None }
    }
}

impl<A: Aggregate> Decider<A> {
    /// The outcome of a command not seen before. Its events get the ids
    /// [`event_id`]`(NAME, aggregate id, version)`.
    fn outcome(&self, stored: &Stored<A::State>, input: Delivered<A::Command>) -> Outcome<A> {
        let aggregate_id = input.command.aggregate_id().to_owned();
        match input.expected_version {
            Err(text) => return Outcome::rejected(input.id, aggregate_id, INVALID_EXPECTED_VERSION.into(), format!("{} {text:?} is not a version (a number from 0, digits only)", headers::EXPECTED_VERSION)),
            Ok(Some(expected)) if expected != stored.version => {
                return Outcome::rejected(input.id, aggregate_id, CONFLICT.into(), format!("expected version {expected}, the aggregate is at {}", stored.version));
            }
            Ok(_) => {}
        }
        let events = match self.0.decide(&stored.state, input.command) {
            Ok(events) => events,
            Err(rejection) => return Outcome::rejected(input.id, aggregate_id, rejection.reason, rejection.message),
        };
        if let Some(stray) = events.iter().find(|e| e.aggregate_id() != aggregate_id) {
            let message = format!("the decision returned {} for aggregate {:?}", stray.type_name(), stray.aggregate_id());
            return Outcome::rejected(input.id, aggregate_id, INVALID_DECISION.into(), message);
        }
        // Refused here, the client hears why; refused by the engine, the command would only
        // be dead-lettered, its sender left waiting for a reply.
        if let Some(message) = events.iter().find_map(unwritable) {
            return Outcome::rejected(input.id, aggregate_id, INVALID_DECISION.into(), message);
        }
        let state = events.iter().fold(stored.state.clone(), |state, event| self.0.evolve(state, event));
        let version = stored.version + events.len() as i64;
        let answer = Answer::Accepted { version, events: events.len() as u32, ids: EventIds::ByVersion };
        let remembered = Remembered { command: input.id, answer };
        let reply = remembered.reply(A::NAME, &aggregate_id);
        Outcome { reply, answer: remembered.answer, accepted: Some((state, events)) }
    }
}

/// Why `event` cannot be written with its family's schema of its type, if it cannot (a
/// value its schema refuses: a string not among an enum's symbols, say).
fn unwritable<F: EventFamily + serde::Serialize>(event: &F) -> Option<String> {
    let Some(known) = F::schemas().latest(event.type_name()) else {
        return Some(format!("the decision returned {}, a type without a schema in its family", event.type_name()));
    };
    let mut scratch = Vec::with_capacity(128);
    herald_bus::publisher::encode_datum(known, event, &mut scratch).err().map(|e| format!("the decision returned a {} that its schema refuses: {e}", event.type_name()))
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
        let reply_to = input.reply_to.as_deref().filter(|t| legal_topic(t)).map(reply_topic);
        // The reply names the command as its sender did (`ce_id` as written).
        let original_id = input.original_id.clone();
        let reply = |mut reply: CommandReply| {
            if let Some(id) = &original_id {
                reply.command_id.clone_from(id);
            }
            reply_to.as_ref().map(|t| Emitted::new(t, reply).exact_topic())
        };
        if let Some(earlier) = stored.recent.find(input.id) {
            let earlier = earlier.reply(A::NAME, input.command.aggregate_id());
            return reply(earlier).into_iter().fold(Reaction::keep(), Reaction::push);
        }
        let command = input.id;
        let Outcome { reply: answer, answer: remembered, accepted } = self.outcome(stored, input);
        let (state, accepted) = accepted.unwrap_or_else(|| (stored.state.clone(), Vec::new()));
        let mut next = Stored { state, version: stored.version, recent: stored.recent.clone() };
        let mut events = Vec::with_capacity(accepted.len());
        for event in accepted {
            next.version += 1;
            let id = event_id(A::NAME, event.aggregate_id(), next.version);
            events.push(Emitted::of_family(&A::EVENTS, event).with_header(headers::SEQUENCE, headers::sequence(next.version)).with_id(id));
        }
        next.recent.remember(Remembered { command, answer: remembered }, A::REMEMBERED);
        let reaction = reply(answer).into_iter().fold(Reaction::with_state(next), Reaction::push);
        events.into_iter().fold(reaction, Reaction::push)
    }
}

#[cfg(test)]
mod tests {
    use super::legal_topic;
    use super::*;
    use herald_bus::Topic;
    use herald_choreography::testkit::Scenario;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Add {
        id: String,
        n: i64,
    }
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Added {
        id: String,
        n: i64,
    }
    impl herald_bus::Event for Add {
        const TYPE: &'static str = "t.Add";
        const SCHEMA: &'static str = r#"{"type":"record","name":"Add","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;
        fn aggregate_id(&self) -> &str {
            &self.id
        }
    }
    impl herald_bus::Event for Added {
        const TYPE: &'static str = "t.Added";
        const SCHEMA: &'static str = r#"{"type":"record","name":"Added","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;
        fn aggregate_id(&self) -> &str {
            &self.id
        }
    }
    herald_bus::family! { #[derive(Debug)] enum Cmd { Add(Add) } }
    herald_bus::family! {
        #[derive(Debug, Clone, serde::Serialize)]
        #[serde(untagged)]
        enum Ev { Added(Added) }
    }

    /// Adds; refuses to go above 10; remembers 3 commands.
    struct Capped;

    impl Aggregate for Capped {
        const NAME: &'static str = "capped";
        type Command = Cmd;
        type Event = Ev;
        type State = i64;
        const COMMANDS: Topic<Cmd> = Topic::new("t.capped.commands");
        const EVENTS: Topic<Ev> = Topic::new("t.capped");
        const REMEMBERED: usize = 3;

        fn decide(&self, total: &i64, command: Cmd) -> Result<Vec<Ev>, crate::Rejection> {
            let Cmd::Add(add) = command;
            if total + add.n > 10 {
                return Err(crate::Rejection::new("too-much", format!("{total} + {}", add.n)));
            }
            Ok(vec![Ev::Added(Added { id: add.id.clone(), n: add.n }), Ev::Added(Added { id: add.id, n: 0 })])
        }

        fn evolve(&self, total: i64, event: &Ev) -> i64 {
            let Ev::Added(added) = event;
            total + added.n
        }
    }

    fn with_reply_topic() -> Extensions {
        let mut ext = Extensions::default();
        ext.push(headers::REPLY_TO, "t.replies");
        ext
    }

    /// The replies among the last step's emissions.
    fn replies(t: &Scenario<Decider<Capped>>) -> Vec<CommandReply> {
        t.emitted_events::<CommandReply>()
    }

    #[test]
    fn a_redelivered_command_gets_the_same_reply_and_changes_nothing() {
        let mut t = Scenario::new(Decider(Capped));
        let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
        t.when_with_headers(&Capped::COMMANDS, Add { id: "a".into(), n: 4 }, meta, with_reply_topic());
        let first = replies(&t);
        assert_eq!(t.emitted().len(), 3, "a reply and two events");
        assert_eq!((t.state("a").state, t.state("a").version), (4, 2));
        let sequences: Vec<String> = t.emitted().iter().filter_map(|e| e.event.headers().iter().find(|(n, _)| n == headers::SEQUENCE).map(|(_, v)| v.clone())).collect();
        assert_eq!(sequences, [headers::sequence(1), headers::sequence(2)]);
        let event_ids: Vec<String> = t.emitted().iter().filter(|e| e.event.topic() == Capped::EVENTS.name()).map(|e| e.meta.id.to_string()).collect();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].event_ids, event_ids, "the reply names the events' ids");
        t.redeliver();
        assert_eq!(replies(&t), first, "the same reply again");
        assert_eq!(t.emitted().len(), 1, "no event the second time");
        assert_eq!((t.state("a").state, t.state("a").version), (4, 2));
    }

    #[test]
    fn a_remembered_rejection_is_given_again_and_old_commands_are_forgotten() {
        let mut t = Scenario::new(Decider(Capped));
        let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
        let mut too_much = herald_choreography::testkit::Raw::encode(&Capped::COMMANDS, &Add { id: "a".into(), n: 11 }, meta);
        too_much.extensions = with_reply_topic();
        let reply_of = |emitted: Vec<herald_choreography::reactor::Emission>| -> Vec<CommandReply> { emitted.iter().filter_map(|e| herald_choreography::testkit::Raw::from_emission(e).decode()).collect() };
        let refused = reply_of(t.deliver(&too_much));
        assert_eq!(refused[0].reason.as_deref(), Some("too-much"));
        assert_eq!(reply_of(t.deliver(&too_much)), refused);
        // Three more commands push the refused one out of memory (REMEMBERED = 3): it is
        // then decided again, against the state as it is.
        let mut versions = Vec::new();
        for _ in 0..3 {
            let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
            t.when_with_headers(&Capped::COMMANDS, Add { id: "a".into(), n: 1 }, meta, with_reply_topic());
            versions.push(replies(&t)[0].version);
        }
        assert_eq!(versions, [Some(2), Some(4), Some(6)], "contiguous versions, two events per command");
        assert_eq!(t.state("a").recent.len(), 3);
        let again = reply_of(t.deliver(&too_much));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message.as_deref(), Some("3 + 11"), "decided again, against the current state");
        assert_eq!(refused[0].message.as_deref(), Some("0 + 11"));
        let expected = Extensions::default();
        let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
        t.when_with_headers(&Capped::COMMANDS, Add { id: "a".into(), n: 1 }, meta, expected);
        assert!(replies(&t).is_empty(), "no reply topic, no reply");
        assert_eq!(t.state("a").version, 8);
    }

    /// An event whose schema refuses a value of it (a grade not among the enum's symbols).
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Graded {
        id: String,
        grade: String,
    }
    impl herald_bus::Event for Graded {
        const TYPE: &'static str = "t.Graded";
        const SCHEMA: &'static str = r#"{"type":"record","name":"Graded","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"grade","type":{"type":"enum","name":"Grade","symbols":["A","B"]}}]}"#;
        fn aggregate_id(&self) -> &str {
            &self.id
        }
    }
    herald_bus::family! {
        #[derive(Debug, Clone, serde::Serialize)]
        #[serde(untagged)]
        enum Grades { Graded(Graded) }
    }

    /// Grades `A` a positive addition, and `Z` (not a symbol of the schema) any other.
    struct Grader;

    impl Aggregate for Grader {
        const NAME: &'static str = "grader";
        type Command = Cmd;
        type Event = Grades;
        type State = i64;
        const COMMANDS: Topic<Cmd> = Topic::new("t.grader.commands");
        const EVENTS: Topic<Grades> = Topic::new("t.grades");

        fn decide(&self, _: &i64, command: Cmd) -> Result<Vec<Grades>, crate::Rejection> {
            let Cmd::Add(add) = command;
            Ok(vec![Grades::Graded(Graded { id: add.id, grade: if add.n > 0 { "A".into() } else { "Z".into() } })])
        }

        fn evolve(&self, graded: i64, _: &Grades) -> i64 {
            graded + 1
        }
    }

    /// A decision whose event its schema refuses is rejected as `invalid-decision`, saying
    /// which event, and changes nothing: the client hears why instead of waiting for a
    /// reply that never comes (the engine would dead-letter the command).
    #[test]
    fn a_decision_whose_event_does_not_encode_is_rejected_and_changes_nothing() {
        let mut t = Scenario::new(Decider(Grader));
        let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
        t.when_with_headers(&Grader::COMMANDS, Add { id: "a".into(), n: 1 }, meta, with_reply_topic());
        assert_eq!(t.state("a").version, 1);
        let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
        t.when_with_headers(&Grader::COMMANDS, Add { id: "a".into(), n: 0 }, meta, with_reply_topic());
        let replies = t.emitted_events::<CommandReply>();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].reason.as_deref(), Some(INVALID_DECISION));
        let message = replies[0].message.as_deref().unwrap_or_default();
        assert!(message.contains("t.Graded") && message.contains("refuses"), "{message}");
        assert_eq!(t.emitted().len(), 1, "the reply only, no event");
        assert_eq!((t.state("a").state, t.state("a").version), (1, 1), "unchanged");
    }

    /// A command sent again once its answer was forgotten (the window is bounded) is
    /// decided again: its events are new events of the stream, with ids of their own
    /// (derived from their versions), so readers that deduplicate by `ce_id` keep them as
    /// the event store does. (Before, their ids derived from the command and repeated the
    /// first decision's.)
    #[test]
    fn a_command_decided_again_once_forgotten_makes_events_with_ids_of_their_own() {
        use herald_choreography::reactor::Emission;
        use herald_choreography::testkit::Raw;
        let mut t = Scenario::new(Decider(Capped));
        let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
        let mut add = Raw::encode(&Capped::COMMANDS, &Add { id: "a".into(), n: 1 }, meta);
        add.extensions = with_reply_topic();
        let ids_of = |emitted: &[Emission]| -> Vec<Uuid> { emitted.iter().filter(|e| e.event.topic() == Capped::EVENTS.name()).map(|e| e.meta.id).collect() };
        let reply_ids = |emitted: &[Emission]| -> Vec<String> { emitted.iter().filter_map(|e| Raw::from_emission(e).decode::<CommandReply>()).flat_map(|r| r.event_ids).collect() };
        let first = t.deliver(&add);
        assert_eq!(ids_of(&first), [event_id("capped", "a", 1), event_id("capped", "a", 2)]);
        for _ in 0..3 {
            let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
            t.when_with_headers(&Capped::COMMANDS, Add { id: "a".into(), n: 1 }, meta, with_reply_topic());
        }
        let again = t.deliver(&add);
        let again_ids = ids_of(&again);
        assert_eq!(again_ids, [event_id("capped", "a", 9), event_id("capped", "a", 10)], "decided again, at versions 9 and 10");
        assert!(ids_of(&first).iter().all(|id| !again_ids.contains(id)), "no id of the first decision again");
        assert_eq!(reply_ids(&again), again_ids.iter().map(Uuid::to_string).collect::<Vec<_>>(), "the reply names them");
        assert_eq!(t.state("a").version, 10);
    }

    /// A client that is not Herald's may send any string as `ce_id`: its reply names the
    /// command by that string, the first time and from memory.
    #[test]
    fn a_command_whose_id_is_not_a_uuid_is_answered_under_that_id() {
        let mut t = Scenario::new(Decider(Capped));
        let mut meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
        meta.original_id = Some("order-42/add".into());
        meta.id = herald_bus::Metadata::id_of(&meta.source, "order-42/add");
        t.when_with_headers(&Capped::COMMANDS, Add { id: "a".into(), n: 4 }, meta, with_reply_topic());
        let first = replies(&t);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].command_id, "order-42/add");
        let keyed: Vec<&str> = t.emitted().iter().filter(|e| e.event.topic() == "t.replies").map(|e| e.meta.subject.as_str()).collect();
        assert_eq!(keyed, ["order-42/add"], "the reply is keyed by the id as sent");
        t.redeliver();
        assert_eq!(replies(&t), first, "the same reply from memory");
        assert_eq!(t.state("a").version, 2, "decided once");
    }

    /// A `ce_replyto` naming one of the aggregate's own topics (its changelog, its
    /// commands, its events) gets no reply there: the command is decided all the same.
    #[test]
    fn a_reply_topic_that_is_one_of_the_aggregates_own_gets_no_reply() {
        let mut t = Scenario::new(Decider(Capped));
        let changelog = herald_choreography::declaration::Declaration::of(t.participant()).changelog_topic();
        for (n, own) in [changelog.as_str(), Capped::COMMANDS.name(), Capped::EVENTS.name()].into_iter().enumerate() {
            let mut ext = Extensions::default();
            ext.push(headers::REPLY_TO, own);
            let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
            t.when_with_headers(&Capped::COMMANDS, Add { id: "a".into(), n: 1 }, meta, ext);
            assert!(replies(&t).is_empty(), "no reply on {own}");
            assert!(t.emitted().iter().all(|e| e.event.topic() == Capped::EVENTS.name() && !e.event.is_exact_topic()), "only the events, on {own}: {:?}", t.emitted());
            assert_eq!(t.emitted().len(), 2, "the command is decided");
            assert_eq!(t.state("a").version, 2 * (n as i64 + 1));
        }
        let meta = t.fresh_meta(<Add as herald_bus::Event>::TYPE, "a", None);
        t.when_with_headers(&Capped::COMMANDS, Add { id: "a".into(), n: 1 }, meta, with_reply_topic());
        assert_eq!(replies(&t).len(), 1, "a reply topic of its own gets the reply");
    }

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
