//! The state machine without a broker: verdicts of event sets in any order, assessments
//! over time, and the projection on a SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_bus::{Envelope, Metadata, Position};

use crate::query::{self, Filter};
use crate::saga::{Observed, TrackedSaga};
use crate::shop::Shop;
use crate::state::{assess, State};
use crate::verdict::{judge, Phase};
use crate::{SagaModel, TrackedEvent, Tracker};

const PLACED: &str = "shop.orders.OrderPlaced";
const RESERVED: &str = "shop.inventory.StockReserved";
const REJECTED: &str = "shop.inventory.StockRejected";
const RELEASED: &str = "shop.inventory.StockReleased";
const CHARGED: &str = "shop.payments.PaymentCharged";
const DECLINED: &str = "shop.payments.PaymentDeclined";
const REFUNDED: &str = "shop.payments.PaymentRefunded";
const CONFIRMED: &str = "shop.orders.OrderConfirmed";
const CANCELLED: &str = "shop.orders.OrderCancelled";

fn model() -> SagaModel {
    Shop::model()
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000 + s)
}

/// Events of saga `s`, one second apart, in the order given.
fn saga(types: &[&str]) -> Vec<TrackedEvent> {
    types
        .iter()
        .enumerate()
        .map(|(i, ty)| TrackedEvent {
            event_id: format!("e{i}"),
            correlation_id: "s".into(),
            causation_id: (i > 0).then(|| format!("e{}", i - 1)),
            event_type: (*ty).into(),
            source: "/test".into(),
            subject: "order-1".into(),
            time: t(i as i64),
            topic: ty.rsplit_once('.').map(|(p, _)| p.to_owned()).unwrap_or_default(),
            partition: 0,
            offset: i as i64,
        })
        .collect()
}

/// Every rotation and the reverse of `events`: the verdict must not depend on arrival order.
fn orders(events: &[TrackedEvent]) -> Vec<Vec<TrackedEvent>> {
    let mut all: Vec<Vec<TrackedEvent>> = (0..events.len()).map(|k| { let mut v = events.to_vec(); v.rotate_left(k); v }).collect();
    all.push(events.iter().rev().cloned().collect());
    all
}

fn phase_in_any_order(types: &[&str]) -> Phase {
    let events = saga(types);
    let verdicts: Vec<_> = orders(&events).iter().map(|e| judge(&model(), e)).collect();
    assert!(verdicts.windows(2).all(|w| w[0] == w[1]), "{verdicts:?}");
    verdicts[0].phase
}

#[test]
fn roles_come_from_the_declarations() {
    let m = model();
    assert_eq!(m.outcomes(), [CANCELLED, CONFIRMED]);
    assert_eq!(m.compensation_of(CHARGED), Some(REFUNDED));
    assert_eq!(m.role(REJECTED), crate::Role::Failure);
    // Steps on internal topics are not the tracker's to see.
    assert_eq!(m.role("shop.inventory.SkuReserved"), crate::Role::Progress);
}

#[test]
fn completed_saga() {
    assert_eq!(phase_in_any_order(&[PLACED, RESERVED, CHARGED, CONFIRMED]), Phase::Completed);
}

#[test]
fn compensated_sagas() {
    assert_eq!(phase_in_any_order(&[PLACED, REJECTED, CANCELLED]), Phase::Compensated);
    assert_eq!(phase_in_any_order(&[PLACED, RESERVED, DECLINED, CANCELLED, RELEASED]), Phase::Compensated);
    assert_eq!(phase_in_any_order(&[PLACED, RESERVED, CANCELLED, CHARGED, RELEASED, REFUNDED]), Phase::Compensated);
}

#[test]
fn violations_no_later_event_can_repair() {
    let both = judge(&model(), &saga(&[PLACED, RESERVED, CHARGED, CONFIRMED, CANCELLED]));
    assert_eq!((both.phase, both.violation.as_deref()), (Phase::Failed, Some("more than one outcome: shop.orders.OrderConfirmed, shop.orders.OrderCancelled")));
    let released = judge(&model(), &saga(&[PLACED, RESERVED, CHARGED, CONFIRMED, RELEASED]));
    assert_eq!((released.phase, released.violation.as_deref()), (Phase::Failed, Some("completed, but step shop.inventory.StockReserved was compensated")));
    assert_eq!(phase_in_any_order(&[PLACED, RESERVED, CHARGED, CONFIRMED, CONFIRMED]), Phase::Failed);
}

#[test]
fn an_unfinished_compensation_waits_then_fails_the_guarantee() {
    let verdict = judge(&model(), &saga(&[PLACED, RESERVED, CHARGED, CANCELLED, REFUNDED]));
    assert_eq!(verdict.phase, Phase::Running);
    assert_eq!(verdict.waiting, ["shop.inventory.StockReleased (compensates shop.inventory.StockReserved)"]);
    let last = t(4);
    let early = assess(&verdict, last, last + chrono::Duration::seconds(30), Duration::from_secs(60));
    assert_eq!((early.state, early.stuck), (State::Running, false));
    let late = assess(&verdict, last, last + chrono::Duration::seconds(61), Duration::from_secs(60));
    assert_eq!((late.state, late.stuck), (State::Failed, true));
    let reason = late.reason.unwrap();
    assert!(reason.starts_with("saga guarantee violated: shop.orders.OrderCancelled, then nothing for 1m1s; never saw shop.inventory.StockReleased"), "{reason}");
}

#[test]
fn a_confirmation_without_its_charge_fails_once_quiet() {
    let verdict = judge(&model(), &saga(&[PLACED, RESERVED, CONFIRMED]));
    assert_eq!((verdict.phase, verdict.waiting.clone()), (Phase::Running, vec![CHARGED.to_owned()]));
    assert_eq!(assess(&verdict, t(2), t(2) + chrono::Duration::hours(1), Duration::from_secs(60)).state, State::Failed);
}

#[test]
fn no_outcome_and_no_progress_is_stuck() {
    let verdict = judge(&model(), &saga(&[PLACED, RESERVED]));
    let a = assess(&verdict, t(1), t(1) + chrono::Duration::minutes(10), Duration::from_secs(300));
    assert_eq!((a.state, a.stuck), (State::Stuck, true));
    assert_eq!(a.reason.as_deref(), Some("no progress for 10m; waiting for an outcome (shop.orders.OrderCancelled or shop.orders.OrderConfirmed)"));
    assert_eq!(assess(&verdict, t(1), t(2), Duration::from_secs(300)).state, State::Running);
}

#[test]
fn durations_are_humanized() {
    use crate::state::humanize;
    assert_eq!(humanize(Duration::from_secs(3720)), "1h2m");
}

fn envelope(e: &TrackedEvent) -> Envelope<Observed<Shop>> {
    let known = Shop::schemas().latest(&e.event_type).expect("a shop type");
    let event = <Observed<Shop> as herald_bus::EventFamily>::decode(&e.event_type, known, &[]).unwrap().expect("known");
    let mut meta = Metadata::new(e.event_type.clone(), e.source.clone(), e.subject.clone());
    meta.id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, e.event_id.as_bytes());
    meta.correlation_id = Some(e.correlation_id.clone());
    meta.causation_id = e.causation_id.clone();
    meta.time = e.time;
    Envelope { event, meta, position: Position { topic: e.topic.clone(), partition: e.partition, offset: e.offset } }
}

/// A SQLite store (in a new directory) where the tracker recorded `sagas` (id, event
/// types) in a scrambled order, the first three events twice.
fn recorded(sagas: &[(&str, &[&str])]) -> (std::sync::Arc<dyn herald_projector::Store>, std::path::PathBuf) {
    use herald_projector::Projection;
    let dir = std::env::temp_dir().join(format!("herald-tracker-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = herald_projector::store::open(&format!("sqlite:{}", dir.join("sagas.db").display())).unwrap();
    let tracker = Tracker::<Shop>::new();
    let mut conn = store.connect().unwrap();
    let mut tx = conn.begin(1).unwrap();
    tracker.migrate(tx.as_tx()).unwrap();
    tx.batch("CREATE VIEW sagas AS SELECT * FROM sagas__v1; CREATE VIEW saga_events AS SELECT * FROM saga_events__v1").unwrap();
    let mut events = Vec::new();
    for &(id, types) in sagas {
        events.extend(saga(types).into_iter().map(|mut e| {
            e.correlation_id = id.into();
            e.event_id = format!("{id}-{}", e.event_id);
            e.subject = format!("order-{id}");
            e
        }));
    }
    events.reverse();
    for e in events.iter().chain(&events[..3]) {
        tracker.apply(tx.as_tx(), &envelope(e)).unwrap();
    }
    tx.commit().unwrap();
    drop(conn);
    (store, dir)
}

/// The projection on a SQLite file: events of several sagas applied in a scrambled
/// order (and twice), then listed and shown.
#[test]
fn the_projection_records_and_judges_in_sqlite() {
    let (store, dir) = recorded(&[("done", &[PLACED, RESERVED, CHARGED, CONFIRMED]), ("undone", &[PLACED, RESERVED, DECLINED, CANCELLED, RELEASED]), ("stranded", &[PLACED, RESERVED, CANCELLED]), ("quiet", &[PLACED])]);
    let mut conn = store.connect().unwrap();
    let now = t(3600);
    let all = query::list(&mut *conn, &Filter::default(), now).unwrap();
    let states: Vec<(&str, State, i64)> = all.iter().map(|s| (s.id.as_str(), s.state, s.events)).collect();
    assert_eq!(states, [("undone", State::Compensated, 5), ("done", State::Completed, 4), ("stranded", State::Failed, 3), ("quiet", State::Stuck, 1)]);
    let stuck: Vec<String> = query::list(&mut *conn, &Filter { stuck: true, ..Filter::default() }, now).unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(stuck, ["stranded", "quiet"]);
    let failed = query::list(&mut *conn, &Filter { state: Some(State::Failed), ..Filter::default() }, now).unwrap();
    assert_eq!(failed.len(), 1);
    let shown = query::show(&mut *conn, "order-undone", now, query::DEFAULT_STUCK_AFTER).unwrap().expect("found by subject");
    let timeline: Vec<&str> = shown.timeline.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(timeline, [PLACED, RESERVED, DECLINED, CANCELLED, RELEASED]);
    assert_eq!(shown.timeline[1].causation_id.as_deref(), Some("e0"));
    assert!(query::show(&mut *conn, "nope", now, query::DEFAULT_STUCK_AFTER).unwrap().is_none());
    let counts = query::counts(&mut *conn, now, query::DEFAULT_STUCK_AFTER).unwrap();
    assert_eq!(counts, [(State::Running, 0), (State::Completed, 1), (State::Compensated, 1), (State::Failed, 1), (State::Stuck, 1)]);
    drop(conn);
    let _ = std::fs::remove_dir_all(dir);
}

/// The real participants' decisions (the choreography test kit's in-memory bus): every
/// order of the reference saga ends completed or compensated in the tracker's judgement,
/// grouped by the correlation ids the participants wrote.
#[test]
fn the_participants_sagas_keep_the_guarantee_in_the_trackers_judgement() {
    use herald_choreography::testkit::World;
    use herald_shop::saga::{Billing, Credit, Orders, Reservations, Stock};
    use herald_shop::{OrderPlaced, ORDERS};

    let stock = Stock::new([("SKU-1".to_owned(), 10)].into());
    let mut world = World::new().with(Orders { payment_timeout: Duration::from_secs(30) }).with(Reservations).with(stock).with(Billing).with(Credit::default());
    world.publish(&ORDERS, OrderPlaced::example("o-confirmed", "c-1", 2_500));
    let mut greedy = OrderPlaced::example("o-out-of-stock", "c-2", 1_000);
    greedy.lines[0].quantity = 50;
    world.publish(&ORDERS, greedy);
    world.publish(&ORDERS, OrderPlaced::example("o-declined", "c-4", 10_000_000));
    world.pause("payments-credit");
    world.publish(&ORDERS, OrderPlaced::example("o-timeout", "c-3", 4_000));
    world.advance(Duration::from_secs(30));
    world.resume("payments-credit");

    let public = Shop::topics();
    let mut sagas: std::collections::BTreeMap<String, Vec<TrackedEvent>> = Default::default();
    for (i, raw) in world.log().iter().enumerate().filter(|(_, r)| public.contains(&r.topic)) {
        let e = TrackedEvent::from_parts(&raw.meta, &Position { topic: raw.topic.clone(), partition: 0, offset: i as i64 });
        sagas.entry(e.correlation_id.clone()).or_default().push(e);
    }
    let verdicts: std::collections::BTreeMap<String, (Phase, Option<String>)> = sagas
        .values()
        .map(|events| {
            let v = judge(&model(), events);
            (events[0].subject.clone(), (v.phase, v.outcome))
        })
        .collect();
    let expected = [
        ("o-confirmed", Phase::Completed, CONFIRMED),
        ("o-declined", Phase::Compensated, CANCELLED),
        ("o-out-of-stock", Phase::Compensated, CANCELLED),
        ("o-timeout", Phase::Compensated, CANCELLED),
    ];
    let expected: std::collections::BTreeMap<String, (Phase, Option<String>)> = expected.iter().map(|(o, p, t)| ((*o).to_owned(), (*p, Some((*t).to_owned())))).collect();
    assert_eq!(verdicts, expected);
    // The timed-out order was charged late and refunded: the tracker saw both.
    let timeout = sagas.values().find(|e| e[0].subject == "o-timeout").expect("the saga");
    let types: Vec<&str> = timeout.iter().map(|e| e.event_type.as_str()).collect();
    assert!(types.contains(&CHARGED) && types.contains(&REFUNDED) && types.contains(&RELEASED), "{types:?}");
}

/// `counts` (counted by the database) agrees with the states `list` assesses, saga by
/// saga, at every time: before, at and after the stuck threshold of each saga's last event.
#[test]
fn counts_agree_with_the_assessed_states() {
    let sagas: &[(&str, &[&str])] = &[
        ("done", &[PLACED, RESERVED, CHARGED, CONFIRMED]),
        ("undone", &[PLACED, RESERVED, DECLINED, CANCELLED, RELEASED]),
        ("stranded", &[PLACED, RESERVED, CANCELLED]),
        ("quiet", &[PLACED]),
        ("moving", &[PLACED, RESERVED]),
        ("twice", &[PLACED, RESERVED, CHARGED, CONFIRMED, CANCELLED]),
    ];
    let (store, dir) = recorded(sagas);
    let mut conn = store.connect().unwrap();
    let stuck_after = Duration::from_secs(60);
    let lasts = [0, 1, 2, 3, 4];
    let mut seen = std::collections::BTreeSet::new();
    for now in lasts.iter().flat_map(|&l| [t(l + 59), t(l + 60), t(l + 60) + chrono::Duration::milliseconds(1), t(l + 61)]) {
        let all = query::list(&mut *conn, &Filter { stuck_after, limit: 100, ..Filter::default() }, now).unwrap();
        assert_eq!(all.len(), sagas.len());
        let counts = query::counts(&mut *conn, now, stuck_after).unwrap();
        for (state, n) in &counts {
            assert_eq!(*n, all.iter().filter(|s| s.state == *state).count() as u64, "{state} at {now}: {all:?}");
            if *n > 0 {
                seen.insert(state.as_str());
            }
        }
    }
    // Every state was met along the way.
    assert_eq!(seen.len(), 5, "{seen:?}");
    drop(conn);
    let _ = std::fs::remove_dir_all(dir);
}

/// The failed sagas warned of are remembered only while they stay failed: the set the
/// report keeps is never larger than one report's list.
#[test]
fn failed_sagas_are_warned_of_once_and_forgotten_when_no_longer_failed() {
    use std::collections::HashSet;
    let failed = |ids: &[&str]| -> Vec<query::Summary> {
        ids.iter()
            .map(|id| query::Summary { id: (*id).into(), subject: String::new(), state: State::Failed, stuck: false, reason: None, outcome: None, started_at: t(0), last_event_at: t(0), events: 1 })
            .collect()
    };
    let ids = |v: Vec<&query::Summary>| v.into_iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    let mut reported = HashSet::new();
    assert_eq!(ids(crate::run::newly_failed(&mut reported, &failed(&["a", "b"]))), ["a", "b"]);
    assert_eq!(ids(crate::run::newly_failed(&mut reported, &failed(&["a", "b", "c"]))), ["c"]);
    // `a` and `b` recovered (a late compensation): forgotten.
    assert!(crate::run::newly_failed(&mut reported, &failed(&["c"])).is_empty());
    assert_eq!(reported, HashSet::from(["c".to_owned()]));
    assert!(crate::run::newly_failed(&mut reported, &[]).is_empty());
    assert!(reported.is_empty());
}
