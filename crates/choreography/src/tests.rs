//! Tests of the core with a small participant: deterministic ids, deadlines, the
//! changelog, keys, and the test kit's own rules.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::changelog::{ChangelogError, StateCodec};
use crate::declaration::{Declaration, Output, DEADLINE};
use crate::testkit::Scenario;
use crate::{Deadline, Fired, Inputs, Participant, Reaction, StateKey};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Asked {
    order_id: String,
    sku: String,
    n: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Said {
    order_id: String,
    text: String,
}

impl herald_bus::Event for Asked {
    const TYPE: &'static str = "t.Asked";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Asked","namespace":"t","fields":[{"name":"order_id","type":"string"},{"name":"sku","type":"string"},{"name":"n","type":"long"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.order_id
    }
}

impl herald_bus::Event for Said {
    const TYPE: &'static str = "t.Said";
    const SCHEMA: &'static str = r#"{"type":"record","name":"Said","namespace":"t","fields":[{"name":"order_id","type":"string"},{"name":"text","type":"string"}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.order_id
    }
}

herald_bus::family! {
    #[derive(Debug, Clone, PartialEq)]
    enum Ev {
        Asked(Asked),
        Said(Said),
    }
}

const T: herald_bus::Topic<Ev> = herald_bus::Topic::new("t.events");

#[derive(Debug)]
enum In {
    Ev(Ev),
    Fired(Fired),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, apache_avro::AvroSchema)]
struct Tally {
    total: i64,
    seen: Vec<String>,
}

/// Keyed by SKU (from events keyed by order): adds `n` to the SKU's tally and says so
/// twice; `n == 0` sets a deadline "ping" in 10 s (payload = order), `n < 0` cancels it,
/// `n == 99` finishes; a fired deadline says "ping <payload>".
struct Tallier;

impl Participant for Tallier {
    const NAME: &'static str = "tallier";
    type Input = In;
    type State = Tally;

    fn inputs(&self) -> Inputs<In> {
        let by_sku = StateKey::by("sku", |e: &Ev| match e {
            Ev::Asked(a) => a.sku.clone(),
            Ev::Said(s) => s.order_id.clone(),
        });
        Inputs::new().on_keyed(&T, by_sku, In::Ev).on_deadline(In::Fired)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<Said, _>(&T).after(&["t.Asked", DEADLINE]).terminal()]
    }

    fn initial(&self, key: &str) -> Tally {
        Tally { total: if key == "seeded" { 100 } else { 0 }, seen: Vec::new() }
    }

    fn decide(&self, state: &Tally, input: In, now: DateTime<Utc>) -> Reaction<Tally> {
        match input {
            In::Ev(Ev::Asked(a)) if a.n == 0 => Reaction::keep().set_deadline(Deadline::after("ping", now, Duration::from_secs(10)).with_payload(a.order_id)),
            In::Ev(Ev::Asked(a)) if a.n < 0 => Reaction::keep().cancel_deadline("ping"),
            In::Ev(Ev::Asked(a)) if a.n == 99 => Reaction::keep().set_deadline(Deadline::after("late", now, Duration::from_secs(1))).finish(),
            In::Ev(Ev::Asked(a)) => {
                let mut next = state.clone();
                next.total += a.n;
                next.seen.push(a.order_id.clone());
                let said = |text: String| Said { order_id: a.order_id.clone(), text };
                Reaction::with_state(next.clone()).emit(&T, said(format!("{} now {}", a.sku, next.total))).emit(&T, said("again".into()))
            }
            In::Ev(Ev::Said(_)) => Reaction::keep(),
            In::Fired(f) => Reaction::keep().emit(&T, Said { order_id: f.payload.clone(), text: format!("{} {}", f.name, f.payload) }),
        }
    }
}

fn asked(order: &str, sku: &str, n: i64) -> Asked {
    Asked { order_id: order.into(), sku: sku.into(), n }
}

#[test]
fn state_is_keyed_by_the_declared_key_and_seeded_by_initial() {
    let mut t = Scenario::new(Tallier);
    t.when(&T, asked("o-1", "A", 2)).when(&T, asked("o-2", "A", 3)).when(&T, asked("o-3", "seeded", 1));
    assert_eq!(t.state("A").total, 5);
    assert_eq!(t.state("A").seen, ["o-1", "o-2"]);
    assert_eq!(t.state("seeded").total, 101);
    let decl = Declaration::of(&Tallier);
    assert_eq!(decl.repartition_topic("t.events").as_deref(), Some("tallier.t.events.by-sku"));
    assert_eq!(decl.repartition_topic("t.other"), None);
    assert_eq!(decl.changelog_topic(), "tallier.changelog");
    for topic in [decl.changelog_topic(), decl.repartition_topic("t.events").unwrap_or_default()] {
        herald_bus::topic::validate_name(&topic).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_replay_emits_identical_ids_with_the_inputs_correlation_and_causation() {
    let run = || {
        let mut t = Scenario::new(Tallier);
        let meta = t.fresh_meta("t.Asked", "o-1", Some("saga-1"));
        t.when_with(&T, asked("o-1", "A", 2), meta.clone());
        (meta, t.emitted().iter().map(|e| (e.meta.id, e.event.to_json())).collect::<Vec<_>>(), t.emitted().iter().map(|e| e.meta.clone()).collect::<Vec<_>>())
    };
    let (input, first, metas) = run();
    let (_, second, _) = run();
    assert_eq!(first, second, "same input, same state: same ids and payloads");
    assert_eq!(first.len(), 2);
    assert_ne!(first[0].0, first[1].0);
    for (index, meta) in metas.iter().enumerate() {
        assert_eq!(meta.id, crate::ids::event_id("tallier", &input.source, input.id, u32::try_from(index).expect("small")));
        assert_eq!(meta.correlation_id.as_deref(), Some("saga-1"));
        assert_eq!(meta.causation_id, Some(input.id.to_string()));
        assert_eq!(meta.subject, "o-1");
        assert_eq!(meta.event_type, "t.Said");
    }
}

/// CloudEvents identifies an event by `source` and `id` together: two inputs with one id
/// from two sources are two events, and their reactions' events (deadlines' included)
/// have ids of their own. (An outside probe saw them share ids, and a reader that
/// deduplicates by `ce_id`, Herald's saga tracker, kept one saga of the two.)
#[test]
fn inputs_of_one_id_from_two_sources_cause_events_of_different_ids() {
    let mut t = Scenario::new(Tallier);
    let web = t.fresh_meta("t.Asked", "o-1", None);
    let mut mobile = t.fresh_meta("t.Asked", "o-2", None);
    (mobile.id, mobile.source) = (web.id, "/mobile".to_owned());
    assert_ne!(web.source, mobile.source);
    t.when_with(&T, asked("o-1", "A", 1), web.clone()).when_with(&T, asked("o-2", "B", 1), mobile.clone());
    // Deadlines set by each, for different keys, at the same time.
    t.when_with(&T, asked("o-1", "C", 0), web).when_with(&T, asked("o-2", "D", 0), mobile);
    t.advance(Duration::from_secs(10));
    let ids: std::collections::HashSet<uuid::Uuid> = t.history().iter().map(|e| e.meta.id).collect();
    assert_eq!(t.history().len(), 6, "two events for each of the first two, one per deadline");
    assert_eq!(ids.len(), 6, "every event has an id of its own: {:?}", t.history().iter().map(|e| &e.meta).collect::<Vec<_>>());
}

#[test]
fn a_deadline_fires_once_with_the_setters_saga_and_a_deterministic_id() {
    let mut t = Scenario::new(Tallier);
    let meta = t.fresh_meta("t.Asked", "o-1", Some("saga-9"));
    t.when_with(&T, asked("o-1", "A", 0), meta.clone()).then_emitted_nothing();
    let at = t.deadline("A", "ping").expect("pending").at;
    assert_eq!(at, t.now() + chrono::Duration::seconds(10));
    t.advance(Duration::from_millis(9_999)).then_emitted_nothing();
    t.advance(Duration::from_millis(1)).then_emitted(&T, &Said { order_id: "o-1".into(), text: "ping o-1".into() });
    let fired = &t.emitted()[0].meta;
    assert_eq!(fired.correlation_id.as_deref(), Some("saga-9"));
    assert_eq!(fired.causation_id, Some(crate::ids::deadline_id(meta.id, "A", "ping", at.timestamp_millis()).to_string()));
    assert!(t.deadlines("A").is_empty());
    t.advance(Duration::from_secs(3600)).then_emitted_nothing();
}

#[test]
fn a_cancelled_or_replaced_deadline_never_fires_at_its_old_time() {
    let mut t = Scenario::new(Tallier);
    t.when(&T, asked("o-1", "A", 0));
    t.advance(Duration::from_secs(5));
    t.when(&T, asked("o-1", "A", 0)); // replaced: now due at 15 s
    assert_eq!(t.deadlines("A").len(), 1);
    t.advance(Duration::from_secs(5)).then_emitted_nothing();
    t.advance(Duration::from_secs(5)).then_emitted_count(1);
    t.when(&T, asked("o-2", "B", 0)).when(&T, asked("o-2", "B", -1));
    assert!(t.deadlines("B").is_empty());
    t.advance(Duration::from_secs(60)).then_emitted_nothing();
}

#[test]
fn no_deadline_survives_the_part_finishing() {
    let mut t = Scenario::new(Tallier);
    t.when(&T, asked("o-1", "A", 0)).when(&T, asked("o-1", "A", 99));
    assert!(t.is_finished("A"));
    assert!(t.deadlines("A").is_empty(), "finishing drops pending deadlines and those set with it");
    t.when(&T, asked("o-1", "A", 0));
    assert!(t.deadlines("A").is_empty(), "a finished part sets no deadline");
    t.advance(Duration::from_secs(60)).then_emitted_nothing();
}

#[test]
fn deadlines_of_several_keys_fire_in_time_order() {
    let mut t = Scenario::new(Tallier);
    t.when(&T, asked("o-late", "A", 0));
    t.advance(Duration::from_secs(3));
    t.when(&T, asked("o-later", "B", 0));
    t.advance(Duration::from_secs(60));
    let texts: Vec<String> = t.emitted_events::<Said>().into_iter().map(|s| s.text).collect();
    assert_eq!(texts, ["ping o-late", "ping o-later"]);
}

#[test]
fn a_redelivered_input_gets_the_same_ids() {
    let mut t = Scenario::new(Tallier);
    t.when(&T, asked("o-1", "A", 2));
    let first: Vec<_> = t.emitted().iter().map(|e| e.meta.id).collect();
    t.redeliver();
    let again: Vec<_> = t.emitted().iter().map(|e| e.meta.id).collect();
    assert_eq!(first, again);
}

#[test]
#[should_panic(expected = "do not declare")]
fn an_undeclared_output_fails_the_test() {
    struct Liar;
    impl Participant for Liar {
        const NAME: &'static str = "liar";
        type Input = Ev;
        type State = Tally;
        fn inputs(&self) -> Inputs<Ev> {
            Inputs::by_subject().on(&T, |e| e)
        }
        fn outputs(&self) -> Vec<Output> {
            Vec::new()
        }
        fn decide(&self, _: &Tally, _: Ev, _: DateTime<Utc>) -> Reaction<Tally> {
            Reaction::keep().emit(&T, Said { order_id: "x".into(), text: String::new() })
        }
    }
    Scenario::new(Liar).when(&T, asked("o", "A", 1));
}

#[test]
fn a_slot_with_deadlines_survives_the_changelog_and_a_foreign_one_is_refused() {
    let mut t = Scenario::new(Tallier);
    t.when(&T, asked("o-1", "A", 4)).when(&T, asked("o-1", "A", 0));
    let slot = t.slot("A").expect("seen").clone();
    let codec = StateCodec::<Tally>::new().expect("valid schema");
    let bytes = codec.encode(&slot).expect("encodes");
    assert_eq!(codec.decode(&bytes).expect("decodes"), slot);
    for cut in 0..bytes.len() {
        assert!(codec.decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let other = StateCodec::<crate::join::Join>::new().expect("valid schema");
    let err = other.decode(&bytes).expect_err("another state type");
    assert!(matches!(err, ChangelogError::WriterSchema { .. } | ChangelogError::Malformed(_)), "{err}");
    crate::changelog::check_state(Tally { total: -3, seen: vec!["a".into()] }).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn state_is_keyed_by_the_saga_by_default() {
    struct Counter;
    impl Participant for Counter {
        const NAME: &'static str = "counter";
        type Input = Ev;
        type State = Tally;
        fn inputs(&self) -> Inputs<Ev> {
            Inputs::new().on(&T, |e| e)
        }
        fn outputs(&self) -> Vec<Output> {
            Vec::new()
        }
        fn decide(&self, tally: &Tally, input: Ev, _: DateTime<Utc>) -> Reaction<Tally> {
            let Ev::Asked(a) = input else { return Reaction::keep() };
            Reaction::with_state(Tally { total: tally.total + a.n, seen: [tally.seen.clone(), vec![a.order_id]].concat() })
        }
    }
    let mut t = Scenario::new(Counter);
    let first = t.fresh_meta("t.Asked", "o-1", Some("saga-1"));
    let second = t.fresh_meta("t.Asked", "o-2", Some("saga-1"));
    let other = t.fresh_meta("t.Asked", "o-1", None);
    t.when_with(&T, asked("o-1", "A", 1), first).when_with(&T, asked("o-2", "B", 2), second).when_with(&T, asked("o-1", "A", 4), other.clone());
    assert_eq!(t.state("saga-1").total, 3, "two subjects, one saga");
    assert_eq!(t.state(&other.id.to_string()).total, 4, "no correlation id: the input starts its own saga");
    assert_eq!(Declaration::of(&Counter).repartition_topic("t.events").as_deref(), Some("counter.t.events.by-correlation"));
}

#[test]
#[should_panic(expected = "register no on_deadline")]
fn a_deadline_nothing_receives_fails_the_test() {
    struct Forgetful;
    impl Participant for Forgetful {
        const NAME: &'static str = "forgetful";
        type Input = Ev;
        type State = Tally;
        fn inputs(&self) -> Inputs<Ev> {
            Inputs::by_subject().on(&T, |e| e)
        }
        fn outputs(&self) -> Vec<Output> {
            Vec::new()
        }
        fn decide(&self, _: &Tally, _: Ev, now: DateTime<Utc>) -> Reaction<Tally> {
            Reaction::keep().set_deadline(Deadline::at("never", now))
        }
    }
    Scenario::new(Forgetful).when(&T, asked("o", "A", 1));
}

#[test]
fn a_due_deadline_is_taken_even_when_nothing_receives_it() {
    let mut slot = crate::slot::Slot::new(Tally::default());
    let cause = herald_bus::Metadata::new("t.Asked", "/t", "o");
    let now = crate::testkit::start_time();
    slot.apply(None, vec![crate::reaction::DeadlineChange::Set(Deadline::at("d", now))], false, &cause);
    let inputs: Inputs<Ev> = Inputs::by_subject().on(&T, |e| e);
    struct Silent;
    impl Participant for Silent {
        const NAME: &'static str = "silent";
        type Input = Ev;
        type State = Tally;
        fn inputs(&self) -> Inputs<Ev> {
            Inputs::by_subject()
        }
        fn outputs(&self) -> Vec<Output> {
            Vec::new()
        }
        fn decide(&self, _: &Tally, _: Ev, _: DateTime<Utc>) -> Reaction<Tally> {
            Reaction::keep()
        }
    }
    let fired = crate::reactor::fire_due(&Silent, &inputs, "/t", "o", &mut slot, now);
    assert!(matches!(fired, Some((_, ref out)) if out.is_empty()));
    assert!(slot.deadlines().is_empty());
    assert!(crate::reactor::fire_due(&Silent, &inputs, "/t", "o", &mut slot, now).is_none());
}

/// Two of three branches within 5 s: `n == 0` opens the join, `n == 1` says branch `sku`
/// succeeded, `n == 2` that it failed; the verdict is said once.
struct Quorum;

impl Participant for Quorum {
    const NAME: &'static str = "quorum";
    type Input = In;
    type State = crate::join::Join;

    fn inputs(&self) -> Inputs<In> {
        Inputs::by_subject().on(&T, In::Ev).on_deadline(In::Fired)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<Said, _>(&T).after(&["t.Asked", DEADLINE]).terminal()]
    }

    fn decide(&self, join: &crate::join::Join, input: In, now: DateTime<Utc>) -> Reaction<crate::join::Join> {
        use crate::join::{Join, Verdict};
        let said = |order_id: &str, verdict: Verdict| Said { order_id: order_id.to_owned(), text: format!("{verdict:?}") };
        let mut next = join.clone();
        let (order_id, verdict) = match input {
            In::Ev(Ev::Asked(a)) if a.n == 0 && join.branches.is_empty() => {
                let open = Join::n_of(2, ["a", "b", "c"], Some(now + chrono::Duration::seconds(5)));
                let deadline = open.deadline("quorum").map(|d| d.with_payload(&a.order_id));
                return deadline.into_iter().fold(Reaction::with_state(open), Reaction::set_deadline);
            }
            In::Ev(Ev::Asked(a)) if a.n == 1 => (a.order_id, next.succeed(&a.sku)),
            In::Ev(Ev::Asked(a)) if a.n == 2 => (a.order_id, next.fail(&a.sku)),
            In::Fired(f) => (f.payload, next.expire(now)),
            In::Ev(_) => return Reaction::keep(),
        };
        match verdict {
            Some(v) => Reaction::with_state(next).emit(&T, said(&order_id, v)).finish(),
            None => Reaction::with_state(next),
        }
    }
}

#[test]
fn a_join_embedded_in_a_participant_decides_once_or_times_out() {
    let mut t = Scenario::new(Quorum);
    t.when(&T, asked("o-1", "-", 0)).when(&T, asked("o-1", "a", 2)).then_emitted_nothing();
    t.when(&T, asked("o-1", "b", 1)).then_emitted_nothing();
    t.when(&T, asked("o-1", "c", 1)).then_emitted(&T, &Said { order_id: "o-1".into(), text: "Succeeded".into() });
    assert!(t.deadlines("o-1").is_empty(), "decided: its deadline is gone");
    t.advance(Duration::from_secs(10)).then_emitted_nothing();

    t.when(&T, asked("o-2", "-", 0)).when(&T, asked("o-2", "a", 1));
    t.advance(Duration::from_secs(5)).then_emitted(&T, &Said { order_id: "o-2".into(), text: "TimedOut".into() });
    t.when(&T, asked("o-2", "b", 1)).then_emitted_nothing();

    t.when(&T, asked("o-3", "-", 0)).when(&T, asked("o-3", "a", 2));
    t.when(&T, asked("o-3", "b", 2)).then_emitted(&T, &Said { order_id: "o-3".into(), text: "Failed".into() });
    t.advance(Duration::from_secs(10)).then_emitted_nothing();
}

/// Replies to each `Asked` on the topic its `ce_replyto` header names, with a header
/// telling the running count: inputs with headers, extra headers, exact topics.
struct Replier;

herald_bus::family! {
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[serde(untagged)]
    enum Replies {
        Said(Said),
    }
}

impl Participant for Replier {
    const NAME: &'static str = "replier";
    type Input = (Ev, uuid::Uuid, Option<String>);
    type State = Tally;

    fn inputs(&self) -> Inputs<Self::Input> {
        Inputs::by_subject().on_with_headers(&T, |e, meta, ext| (e, meta.id, ext.get("ce_replyto").map(str::to_owned)))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::to_named_topic::<Said, Replies>()]
    }

    fn decide(&self, tally: &Tally, (event, id, reply_to): Self::Input, _now: DateTime<Utc>) -> Reaction<Tally> {
        let (Ev::Asked(asked), Some(reply_to)) = (event, reply_to) else { return Reaction::keep() };
        let state = Tally { total: tally.total + 1, ..tally.clone() };
        let said = Replies::Said(Said { order_id: asked.order_id, text: id.to_string() });
        let emitted = crate::emit::Emitted::of_family(&herald_bus::Topic::named(reply_to), said).with_header("ce_sequence", state.total.to_string()).exact_topic();
        Reaction::with_state(state).push(emitted)
    }
}

#[test]
fn inputs_with_headers_reach_the_decision_and_replies_go_to_the_named_topic_with_their_headers() {
    let mut t = Scenario::new(Replier);
    let meta = t.fresh_meta("t.Asked", "o-1", None);
    let id = meta.id;
    let mut ext = crate::input::Extensions::default();
    ext.push("ce_replyto", "client-7.replies");
    t.when_with_headers(&T, Asked { order_id: "o-1".into(), sku: "s".into(), n: 1 }, meta, ext.clone());
    let emitted = t.emitted();
    assert_eq!(emitted.len(), 1);
    let event = &emitted[0].event;
    assert_eq!((event.topic(), event.is_exact_topic(), event.type_name()), ("client-7.replies", true, "t.Said"));
    assert_eq!(event.headers(), &[("ce_sequence".to_owned(), "1".to_owned())]);
    assert_eq!(event.to_json(), serde_json::json!({"order_id": "o-1", "text": id.to_string()}));
    // The encoded event (a family value through its untagged Serialize) is the member's datum.
    let raw = crate::testkit::Raw::from_emission(&emitted[0]);
    assert_eq!(raw.decode::<Said>(), Some(Said { order_id: "o-1".into(), text: id.to_string() }));
    assert_eq!(raw.extensions.get("ce_sequence"), Some("1"));
    // Without the header the decision sees None.
    t.when(&T, Asked { order_id: "o-1".into(), sku: "s".into(), n: 1 }).then_emitted_nothing();
    assert_eq!(t.state("o-1").total, 1);
}

#[test]
#[should_panic(expected = "which its outputs() do not declare")]
fn an_exact_topic_output_must_be_declared_as_named_by_the_input() {
    struct Undeclared;
    impl Participant for Undeclared {
        const NAME: &'static str = "undeclared";
        type Input = (Ev, uuid::Uuid, Option<String>);
        type State = Tally;
        fn inputs(&self) -> Inputs<Self::Input> {
            Replier.inputs()
        }
        fn outputs(&self) -> Vec<Output> {
            vec![Output::of::<Said, _>(&T)]
        }
        fn decide(&self, tally: &Tally, input: Self::Input, now: DateTime<Utc>) -> Reaction<Tally> {
            Replier.decide(tally, input, now)
        }
    }
    let mut t = Scenario::new(Undeclared);
    let meta = t.fresh_meta("t.Asked", "o-1", None);
    let mut ext = crate::input::Extensions::default();
    ext.push("ce_replyto", "t.events");
    t.when_with_headers(&T, Asked { order_id: "o-1".into(), sku: "s".into(), n: 1 }, meta, ext);
}
