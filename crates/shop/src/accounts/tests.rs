//! The accounts' rules (decide/evolve, no I/O), then the aggregate adapter on the
//! choreography test kit (no broker): versions, replies, duplicates, conflicts.

use herald_aggregate::{Aggregate, CommandReply, Decider, Outcome, Stored};
use herald_bus::Metadata;
use herald_choreography::input::Extensions;
use herald_choreography::testkit::{Raw, Scenario};

use super::*;

fn open(id: &str) -> AccountCommand {
    AccountCommand::Open(OpenAccount { account_id: id.into(), owner: format!("owner-of-{id}") })
}
fn deposit(id: &str, cents: i64) -> AccountCommand {
    AccountCommand::Deposit(Deposit { account_id: id.into(), amount_cents: cents })
}
fn withdraw(id: &str, cents: i64) -> AccountCommand {
    AccountCommand::Withdraw(Withdraw { account_id: id.into(), amount_cents: cents })
}

/// Decides `commands` in order from a fresh wallet, folding accepted events; returns the
/// wallet and each outcome (the events, or the rejection's reason).
fn run(commands: Vec<AccountCommand>) -> (Wallet, Vec<Result<Vec<AccountEvent>, String>>) {
    let mut wallet = Wallet::default();
    let mut outcomes = Vec::new();
    for command in commands {
        match Accounts.decide(&wallet, command) {
            Ok(events) => {
                wallet = events.iter().fold(wallet, |w, e| Accounts.evolve(w, e));
                outcomes.push(Ok(events));
            }
            Err(r) => outcomes.push(Err(r.reason)),
        }
    }
    (wallet, outcomes)
}

#[test]
fn the_schemas_match_the_types() {
    use herald_bus::event::check_schema;
    check_schema::<OpenAccount>().expect("OpenAccount");
    check_schema::<Deposit>().expect("Deposit");
    check_schema::<Withdraw>().expect("Withdraw");
    check_schema::<AccountOpened>().expect("AccountOpened");
    check_schema::<MoneyDeposited>().expect("MoneyDeposited");
    check_schema::<MoneyWithdrawn>().expect("MoneyWithdrawn");
}

#[test]
fn given_an_open_account_with_money_when_withdrawing_then_the_balance_goes_down() {
    let (wallet, outcomes) = run(vec![open("a"), deposit("a", 1000), withdraw("a", 300)]);
    assert_eq!(wallet, Wallet { open: true, owner: "owner-of-a".into(), balance_cents: 700 });
    assert_eq!(outcomes[2], Ok(vec![AccountEvent::Withdrawn(MoneyWithdrawn { account_id: "a".into(), amount_cents: 300 })]));
}

#[test]
fn a_withdrawal_above_the_balance_is_insufficient_funds_and_the_balance_stays() {
    let (wallet, outcomes) = run(vec![open("a"), deposit("a", 500), withdraw("a", 501), withdraw("a", 500)]);
    assert_eq!(outcomes[2], Err(reason::INSUFFICIENT_FUNDS.into()));
    assert!(outcomes[3].is_ok(), "the whole balance can be taken");
    assert_eq!(wallet.balance_cents, 0);
}

#[test]
fn commands_on_an_account_not_opened_are_no_such_account() {
    let (wallet, outcomes) = run(vec![deposit("a", 5), withdraw("a", 5)]);
    assert_eq!(outcomes, vec![Err(reason::NO_SUCH_ACCOUNT.into()), Err(reason::NO_SUCH_ACCOUNT.into())]);
    assert_eq!(wallet, Wallet::default());
}

#[test]
fn a_second_open_is_already_open_and_amounts_must_be_positive() {
    let (wallet, outcomes) = run(vec![open("a"), open("a"), deposit("a", 0), deposit("a", -5), withdraw("a", 0)]);
    assert_eq!(outcomes[1], Err(reason::ALREADY_OPEN.into()));
    assert_eq!(outcomes[2..], [Err(reason::INVALID_AMOUNT.into()), Err(reason::INVALID_AMOUNT.into()), Err(reason::INVALID_AMOUNT.into())]);
    assert_eq!(wallet.balance_cents, 0);
}

/// A balance near `i64::MAX` cents took a deposit that overflowed it: negative in a release
/// build, a panic (no reply, a dead letter) in a debug one.
#[test]
fn a_deposit_the_balance_cannot_hold_is_an_invalid_amount_and_the_balance_stays() {
    let (wallet, outcomes) = run(vec![open("a"), deposit("a", i64::MAX), deposit("a", 1), withdraw("a", i64::MAX), deposit("a", i64::MAX)]);
    assert_eq!(outcomes[2], Err(reason::INVALID_AMOUNT.into()));
    assert!(outcomes[3].is_ok() && outcomes[4].is_ok(), "{outcomes:?}");
    assert_eq!(wallet.balance_cents, i64::MAX);
}

// ---- the adapter (herald-aggregate's Decider) on the choreography test kit ----

const REPLIES: &str = "t.replies";

/// Sends `command` to the scenario as the client would: headers `ce_replyto` and, when
/// given, `ce_expectedversion`. Returns the command's id.
fn send(t: &mut Scenario<Decider<Accounts>>, command: AccountCommand, expect: Option<&str>) -> String {
    use herald_bus::EventFamily;
    let meta = t.fresh_meta(command.type_name(), command.aggregate_id(), None);
    let id = meta.id.to_string();
    deliver(t, command, meta, expect);
    id
}

fn deliver(t: &mut Scenario<Decider<Accounts>>, command: AccountCommand, meta: Metadata, expect: Option<&str>) {
    let mut ext = Extensions::default();
    ext.push(herald_aggregate::headers::REPLY_TO, REPLIES);
    if let Some(v) = expect {
        ext.push(herald_aggregate::headers::EXPECTED_VERSION, v);
    }
    match command {
        AccountCommand::Open(c) => t.when_with_headers(&ACCOUNT_COMMANDS, c, meta, ext),
        AccountCommand::Deposit(c) => t.when_with_headers(&ACCOUNT_COMMANDS, c, meta, ext),
        AccountCommand::Withdraw(c) => t.when_with_headers(&ACCOUNT_COMMANDS, c, meta, ext),
    };
}

/// The last step's reply (exactly one).
fn reply(t: &Scenario<Decider<Accounts>>) -> CommandReply {
    let replies: Vec<CommandReply> = t.emitted_events();
    assert_eq!(replies.len(), 1, "one reply: {:#?}", t.emitted());
    let emitted = t.emitted().iter().find(|e| e.event.type_name() == "herald.aggregate.CommandReply").expect("reply");
    assert_eq!((emitted.event.topic(), emitted.event.is_exact_topic()), (REPLIES, true), "to the named topic as named");
    assert_eq!(emitted.event.key(), replies[0].command_id, "keyed by the command id");
    replies[0].clone()
}

#[test]
fn accepted_commands_write_events_with_contiguous_versions_and_the_reply_names_them() {
    let mut t = Scenario::new(Decider(Accounts));
    let opened = send(&mut t, open("a"), None);
    let r = reply(&t);
    assert_eq!((r.outcome, r.version, r.command_id.as_str(), r.aggregate_id.as_str()), (Outcome::Accepted, Some(1), opened.as_str(), "a"));
    send(&mut t, deposit("a", 1000), None);
    send(&mut t, withdraw("a", 400), None);
    let r = reply(&t);
    assert_eq!(r.version, Some(3));
    // The event: on shop.accounts, keyed by account, version 3 in ce_sequence, caused by
    // the command, with the id the reply lists.
    let events: Vec<&herald_choreography::reactor::Emission> = t.emitted().iter().filter(|e| e.event.topic() == ACCOUNTS.name()).collect();
    assert_eq!(events.len(), 1);
    let raw = Raw::from_emission(events[0]);
    assert_eq!(raw.decode::<MoneyWithdrawn>(), Some(MoneyWithdrawn { account_id: "a".into(), amount_cents: 400 }));
    assert_eq!(raw.extensions.get("ce_sequence"), Some("0000000000000000003"));
    assert_eq!(events[0].event.key(), "a");
    assert_eq!(r.event_ids, vec![events[0].meta.id.to_string()]);
    assert_eq!(events[0].meta.causation_id.as_deref(), Some(r.command_id.as_str()));
    let stored: &Stored<Wallet> = t.state("a");
    assert_eq!((stored.version, stored.state.balance_cents), (3, 600));
    // Every event on the topic carries its version: 1, 2, 3.
    let sequences: Vec<String> = t.history().iter().filter(|r| r.topic == ACCOUNTS.name()).filter_map(|r| r.extensions.get("ce_sequence").map(str::to_owned)).collect();
    assert_eq!(sequences, ["0000000000000000001", "0000000000000000002", "0000000000000000003"], "zero-padded: they order as strings");
}

#[test]
fn a_rejected_command_writes_only_its_reply_and_the_version_stays() {
    let mut t = Scenario::new(Decider(Accounts));
    send(&mut t, open("a"), None);
    send(&mut t, withdraw("a", 1), None);
    let r = reply(&t);
    assert_eq!((r.outcome, r.version, r.reason.as_deref()), (Outcome::Rejected, None, Some(reason::INSUFFICIENT_FUNDS)));
    assert!(r.event_ids.is_empty() && r.message.is_some());
    assert_eq!(t.emitted().len(), 1, "the reply only");
    assert_eq!(t.state("a").version, 1);
}

#[test]
fn a_command_delivered_again_gets_the_same_reply_and_is_not_decided_again() {
    let mut t = Scenario::new(Decider(Accounts));
    send(&mut t, open("a"), None);
    send(&mut t, deposit("a", 100), None);
    let first = reply(&t);
    let first_reply_id = t.emitted().iter().find(|e| e.event.type_name() == "herald.aggregate.CommandReply").map(|e| e.meta.id);
    t.redeliver();
    assert_eq!(reply(&t), first, "the same reply");
    assert_eq!(t.emitted().iter().find(|e| e.event.type_name() == "herald.aggregate.CommandReply").map(|e| e.meta.id), first_reply_id, "with the same ce_id");
    assert_eq!(t.emitted().len(), 1, "no event the second time");
    assert_eq!((t.state("a").version, t.state("a").state.balance_cents), (2, 100));
    // A rejection is remembered too: sent again after the account got money, it is still
    // the rejection it was (the same reply), not a new decision.
    send(&mut t, withdraw("a", 500), None);
    let rejected = reply(&t);
    send(&mut t, deposit("a", 1000), None);
    let meta = {
        let mut m = t.fresh_meta("shop.accounts.Withdraw", "a", None);
        m.id = rejected.command_id.parse().expect("uuid");
        m
    };
    deliver(&mut t, withdraw("a", 500), meta, None);
    assert_eq!(reply(&t), rejected);
    assert_eq!(t.state("a").state.balance_cents, 1100);
}

#[test]
fn an_expected_version_other_than_the_aggregates_is_a_conflict() {
    let mut t = Scenario::new(Decider(Accounts));
    send(&mut t, open("a"), Some("0"));
    assert_eq!(reply(&t).version, Some(1), "expected 0 on a new aggregate: accepted");
    send(&mut t, deposit("a", 10), Some("0"));
    let r = reply(&t);
    assert_eq!((r.outcome, r.reason.as_deref()), (Outcome::Rejected, Some(herald_aggregate::CONFLICT)));
    assert_eq!(t.state("a").version, 1);
    send(&mut t, deposit("a", 10), Some("1"));
    assert_eq!(reply(&t).version, Some(2));
    // Not a version: refused as such, not taken leniently (" 2" as 2) nor a conflict ("-1").
    for text in ["two", " 2", "-1", "+2", "", "99999999999999999999"] {
        send(&mut t, deposit("a", 10), Some(text));
        assert_eq!(reply(&t).reason.as_deref(), Some(herald_aggregate::decider::INVALID_EXPECTED_VERSION), "{text:?}");
    }
    assert_eq!(t.state("a").version, 2);
}

#[test]
fn aggregates_are_independent_and_a_command_without_reply_topic_is_still_decided() {
    let mut t = Scenario::new(Decider(Accounts));
    send(&mut t, open("a"), None);
    send(&mut t, open("b"), None);
    assert_eq!(reply(&t).version, Some(1), "b starts at 1 too");
    t.when(&ACCOUNT_COMMANDS, Deposit { account_id: "b".into(), amount_cents: 5 });
    assert_eq!(t.emitted().len(), 1, "the event, no reply");
    assert_eq!(t.emitted()[0].event.topic(), ACCOUNTS.name());
    assert_eq!((t.state("b").version, t.state("b").state.balance_cents), (2, 5));
}

#[test]
fn recent_replies_are_bounded() {
    let mut t = Scenario::new(Decider(Accounts));
    send(&mut t, open("a"), None);
    for _ in 0..(Accounts::REMEMBERED + 10) {
        send(&mut t, deposit("a", 1), None);
    }
    assert_eq!(t.state("a").recent.len(), Accounts::REMEMBERED);
    assert_eq!(t.state("a").version, 1 + Accounts::REMEMBERED as i64 + 10);
}
