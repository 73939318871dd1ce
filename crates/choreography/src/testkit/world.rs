//! Several participants together, on an in-memory bus.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_bus::event::Member;
use herald_bus::{Event, EventFamily, Topic};
use serde::de::DeserializeOwned;

use super::raw::{test_meta, Raw};
use super::scenario::Scenario;
use crate::participant::Participant;
use crate::reactor::Emission;

/// What the world needs of a participant's scenario.
trait Node {
    fn name(&self) -> &'static str;
    fn consumes(&self, topic: &str) -> bool;
    fn deliver(&mut self, raw: &Raw) -> Vec<Emission>;
    fn fire_due(&mut self, now: DateTime<Utc>) -> Vec<Emission>;
    fn set_now(&mut self, now: DateTime<Utc>);
}

impl<P: Participant> Node for Scenario<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn consumes(&self, topic: &str) -> bool {
        Scenario::consumes(self, topic)
    }

    fn deliver(&mut self, raw: &Raw) -> Vec<Emission> {
        Scenario::deliver(self, raw)
    }

    fn fire_due(&mut self, now: DateTime<Utc>) -> Vec<Emission> {
        self.set_now(now);
        Scenario::fire_due(self)
    }

    fn set_now(&mut self, now: DateTime<Utc>) {
        Scenario::set_now(self, now);
    }
}

struct Member_ {
    node: Box<dyn Node>,
    paused: bool,
    backlog: VecDeque<Raw>,
}

/// Participants wired by topic: each event one emits is delivered to every participant
/// that consumes its topic, in publication order, until nothing is left to deliver. A
/// paused participant is down: its inputs wait and its deadlines do not fire until it is
/// resumed. Delivery is exactly once per participant (what the transactional runtime will
/// provide); [`World::redeliver_to`] plays a duplicate.
///
/// ```
/// # herald_bus::family! { #[derive(Debug)] pub enum Ev { Ping(Ping), Pong(Pong) } }
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub struct Ping { id: String }
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub struct Pong { id: String }
/// # impl herald_bus::Event for Ping { const TYPE: &'static str = "x.Ping"; const SCHEMA: &'static str = r#"{"type":"record","name":"Ping","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
/// # impl herald_bus::Event for Pong { const TYPE: &'static str = "x.Pong"; const SCHEMA: &'static str = r#"{"type":"record","name":"Pong","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
/// # const PINGS: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.pings");
/// # use herald_choreography::{declaration::Output, Inputs, Participant, Reaction};
/// # struct Ponger;
/// # impl Participant for Ponger {
/// #     const NAME: &'static str = "ponger"; type Input = Ev; type State = bool;
/// #     fn inputs(&self) -> Inputs<Ev> { Inputs::by_subject().on(&PINGS, |e| e) }
/// #     fn outputs(&self) -> Vec<Output> { vec![Output::of::<Pong, _>(&PINGS).after(&["x.Ping"]).terminal()] }
/// #     fn decide(&self, done: &bool, input: Ev, _: chrono::DateTime<chrono::Utc>) -> Reaction<bool> {
/// #         match input { Ev::Ping(p) if !done => Reaction::with_state(true).emit(&PINGS, Pong { id: p.id }), _ => Reaction::keep() }
/// #     }
/// # }
/// use herald_choreography::testkit::World;
/// let mut world = World::new().with(Ponger);
/// world.pause("ponger");
/// world.publish(&PINGS, Ping { id: "a".into() });
/// assert!(world.events::<Pong>().is_empty());
/// world.resume("ponger");
/// assert_eq!(world.events::<Pong>(), [Pong { id: "a".into() }]);
/// ```
pub struct World {
    members: Vec<Member_>,
    now: DateTime<Utc>,
    published: u64,
    log: Vec<Raw>,
    queue: VecDeque<Raw>,
}

impl World {
    /// An empty world at [`super::start_time`].
    pub fn new() -> Self {
        World { members: Vec::new(), now: super::start_time(), published: 0, log: Vec::new(), queue: VecDeque::new() }
    }

    /// Adds a participant.
    pub fn with<P: Participant>(mut self, participant: P) -> Self {
        self.members.push(Member_ { node: Box::new(Scenario::new(participant)), paused: false, backlog: VecDeque::new() });
        self
    }

    /// The clock's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Publishes `event` on `topic` from outside (a client) with fresh metadata, and
    /// delivers everything that follows.
    pub fn publish<F, E>(&mut self, topic: &Topic<F>, event: E) -> &mut Self
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        self.published += 1;
        let meta = test_meta(self.published, E::TYPE, event.aggregate_id(), None, self.now);
        let raw = Raw::encode(topic, &event, meta);
        self.log.push(raw.clone());
        self.queue.push_back(raw);
        self.run();
        self
    }

    /// Delivers the logged event number `index` again to participant `name` (a duplicate).
    pub fn redeliver_to(&mut self, name: &str, index: usize) -> &mut Self {
        let raw = self.log.get(index).cloned().unwrap_or_else(|| panic!("no event {index} in the log"));
        let i = self.index(name);
        let out = self.members[i].node.deliver(&raw);
        self.emit(out);
        self.run();
        self
    }

    /// The clock moves `by`; deadlines due fire in every running participant, and what
    /// follows is delivered.
    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.now = self.now.checked_add_signed(chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX)).unwrap_or(DateTime::<Utc>::MAX_UTC);
        for i in 0..self.members.len() {
            if !self.members[i].paused {
                let out = self.members[i].node.fire_due(self.now);
                self.emit(out);
            }
        }
        self.run();
        self
    }

    /// Participant `name` goes down: its inputs wait, its deadlines do not fire.
    pub fn pause(&mut self, name: &str) -> &mut Self {
        let i = self.index(name);
        self.members[i].paused = true;
        self
    }

    /// Participant `name` comes back: deadlines that came due while it was down fire,
    /// then its waiting inputs are delivered in order.
    pub fn resume(&mut self, name: &str) -> &mut Self {
        let i = self.index(name);
        self.members[i].paused = false;
        let out = self.members[i].node.fire_due(self.now);
        self.emit(out);
        while let Some(raw) = self.members[i].backlog.pop_front() {
            let out = self.members[i].node.deliver(&raw);
            self.emit(out);
        }
        self.run();
        self
    }

    /// Every event published so far (from outside and by participants), in order.
    pub fn log(&self) -> &[Raw] {
        &self.log
    }

    /// Every event of type `E` published so far, in order.
    pub fn events<E: Event + DeserializeOwned>(&self) -> Vec<E> {
        self.log.iter().filter_map(Raw::decode::<E>).collect()
    }

    fn index(&self, name: &str) -> usize {
        self.members.iter().position(|m| m.node.name() == name).unwrap_or_else(|| panic!("no participant {name:?} in this world"))
    }

    fn emit(&mut self, out: Vec<Emission>) {
        for emission in out {
            let raw = Raw::from_emission(&emission);
            self.log.push(raw.clone());
            self.queue.push_back(raw);
        }
    }

    fn run(&mut self) {
        while let Some(raw) = self.queue.pop_front() {
            for i in 0..self.members.len() {
                if !self.members[i].node.consumes(&raw.topic) {
                    continue;
                }
                if self.members[i].paused {
                    self.members[i].backlog.push_back(raw.clone());
                    continue;
                }
                self.members[i].node.set_now(self.now);
                let out = self.members[i].node.deliver(&raw);
                self.emit(out);
            }
        }
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}
