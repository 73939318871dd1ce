//! What the engine keeps per aggregate in its changelog: the state, its version, and what
//! it answered to the commands it decided most recently ([`Recent`]).
//!
//! **Why the recent answers are kept compact.** The engine writes an aggregate's
//! [`Stored`] record in every transaction that changed it, and each command's decision
//! clones it. Kept as 64 [`CommandReply`] records (strings for the ids, an array of event
//! ids each), that was ~10 KB per changelog record, ~450 allocations per clone and an
//! Avro `Value` tree of ~450 nodes per write: the largest part of the aggregate's cost
//! against the plain reaction step (BENCHMARKS.md). A reply is fully determined by the
//! command id, the aggregate (the record's key), the aggregate's name and, accepted, its
//! version and event count (event ids are [`event_id`] of the aggregate and each event's
//! version), so [`Recent`] keeps only those: 18 bytes per accepted command (the id, a tag
//! and the event count; the version follows from the one before), written as one Avro
//! `bytes` field (layout in [`Recent`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use apache_avro::schema::Schema;
use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::reply::CommandReply;

/// The id (`ce_id`) of the event at `version` of aggregate `aggregate_id`, for the
/// aggregate named `name` ([`Aggregate::NAME`](crate::Aggregate::NAME)): a name-based UUID
/// (version 5) of the three, so the same event has the same id however often its command
/// is decided in a transaction that aborts, and a command decided twice (sent again after
/// its answer was forgotten, see [`Aggregate::REMEMBERED`](crate::Aggregate::REMEMBERED))
/// makes events with ids of their own: readers that deduplicate by `ce_id` see every
/// event of the stream.
///
/// ```
/// use herald_aggregate::stored::event_id;
/// assert_eq!(event_id("accounts", "a-1", 3), event_id("accounts", "a-1", 3));
/// assert_ne!(event_id("accounts", "a-1", 3), event_id("accounts", "a-1", 4));
/// assert_ne!(event_id("accounts", "a-1", 3), event_id("accounts", "a-2", 3));
/// assert_ne!(event_id("accounts", "a-1", 3), event_id("wallets", "a-1", 3));
/// assert_eq!(event_id("accounts", "a-1", 3).get_version_num(), 5);
/// ```
pub fn event_id(name: &str, aggregate_id: &str, version: i64) -> Uuid {
    let mut bytes = Vec::with_capacity(8 + name.len() + 1 + aggregate_id.len() + 1 + 8);
    bytes.extend_from_slice(b"version\0");
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(aggregate_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&version.to_be_bytes());
    Uuid::new_v5(&herald_choreography::ids::NAMESPACE, &bytes)
}

/// Most outputs of one reaction an id by command is looked for among ([`is_its_event`]).
const MAX_OUTPUTS: u32 = 1024;

/// Whether the record with id `id` (`ce_id`) and cause `causation` (`ce_causationid`) is
/// the event the engine of aggregate `name` wrote at `version` of `aggregate_id`: its id is
/// [`event_id`] of the three, or, for events written before ids by version, an id by
/// command ([`EventIds::ByCommand`]: the command named by `causation`). A record anyone
/// else wrote on the event topic (`herald publish`, a producer of its own) is not: the
/// stream index and the reads leave it out.
///
/// ```
/// use herald_aggregate::stored::{event_id, is_its_event};
/// let id = event_id("accounts", "a-1", 3);
/// assert!(is_its_event("accounts", "a-1", 3, id, None));
/// assert!(!is_its_event("accounts", "a-1", 4, id, None));
/// assert!(!is_its_event("accounts", "a-1", 1, uuid::Uuid::now_v7(), Some("not a command id")));
/// let command = uuid::Uuid::now_v7();
/// let old = herald_aggregate::stored::event_id_by_command("accounts", command, 1);
/// assert!(is_its_event("accounts", "a-1", 7, old, Some(&command.to_string())));
/// ```
pub fn is_its_event(name: &str, aggregate_id: &str, version: i64, id: Uuid, causation: Option<&str>) -> bool {
    if id == event_id(name, aggregate_id, version) {
        return true;
    }
    // Ids by command are name-based (version 5) UUIDs too; others need no search.
    let Some(command) = causation.and_then(|c| Uuid::parse_str(c).ok()).filter(|_| id.get_version_num() == 5) else { return false };
    (0..MAX_OUTPUTS).any(|i| event_id_by_command(name, command, i) == id)
}

/// The id of the event output number `index` of aggregate `name`'s answer to `command`,
/// as Herald made it before format 3 ([`EventIds::ByCommand`]): the choreography engine's
/// id of that time, a name-based UUID of the name, the command id and the index (the
/// engine's ids now take the input's source too; these stay as they were written).
///
/// ```
/// use herald_aggregate::stored::event_id_by_command;
/// let command = uuid::Uuid::from_u128(7);
/// assert_eq!(event_id_by_command("accounts", command, 1), event_id_by_command("accounts", command, 1));
/// assert_ne!(event_id_by_command("accounts", command, 1), event_id_by_command("accounts", command, 2));
/// assert_eq!(event_id_by_command("accounts", command, 1).get_version_num(), 5);
/// ```
pub fn event_id_by_command(name: &str, command: Uuid, index: u32) -> Uuid {
    let mut bytes = Vec::with_capacity(name.len() + 1 + 16 + 4);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(command.as_bytes());
    bytes.extend_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&herald_choreography::ids::NAMESPACE, &bytes)
}

/// One aggregate as stored: the state folded from its events, the number of its events
/// (its version), and the answers to its last
/// [`Aggregate::REMEMBERED`](crate::Aggregate::REMEMBERED) commands, oldest first.
///
/// ```
/// use herald_aggregate::Stored;
/// let stored: Stored<i64> = Stored::default();
/// assert_eq!((stored.version, stored.recent.len()), (0, 0));
/// assert!(stored.recent.find(uuid::Uuid::nil()).is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored<S> {
    /// The aggregate's state.
    pub state: S,
    /// How many events it has (0 before the first).
    pub version: i64,
    /// The answers to its most recent commands, oldest first.
    pub recent: Recent,
}

/// What an aggregate answered to one command: enough to give the same [`CommandReply`]
/// again ([`Remembered::reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// The command's id (`ce_id`).
    pub command: Uuid,
    /// Accepted or rejected, with what the reply says.
    pub answer: Answer,
}

/// The answer part of a [`Remembered`] command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accepted: the aggregate was at `version` after its `events` events.
    Accepted {
        /// The version after the command's events.
        version: i64,
        /// How many events.
        events: u32,
        /// How their ids were made.
        ids: EventIds,
    },
    /// Rejected with a reason and a message (shared: cloning a stored aggregate does not
    /// copy them).
    Rejected(Arc<(String, String)>),
}

/// How the ids of an accepted command's events were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventIds {
    /// [`event_id`] of the aggregate and each event's version: what Herald writes.
    ByVersion,
    /// [`event_id_by_command`] of the aggregate's name, the
    /// command and `first + i`, the event's index among the reaction's outputs (1 when a
    /// reply was emitted before it): what Herald wrote before format 3 (the answers of
    /// changelogs written then give their replies as they were).
    ByCommand {
        /// The output index of the first event.
        first: u32,
    },
}

impl Remembered {
    /// The reply this answer was: `name` is the aggregate's [`Aggregate::NAME`](crate::Aggregate::NAME)
    /// (the seed of its event ids), `aggregate_id` the command's key.
    ///
    /// ```
    /// use herald_aggregate::stored::{event_id, Answer, EventIds, Remembered};
    /// let command = uuid::Uuid::new_v4();
    /// let answer = Remembered { command, answer: Answer::Accepted { version: 4, events: 2, ids: EventIds::ByVersion } };
    /// let reply = answer.reply("counter", "c-1");
    /// assert_eq!((reply.version, reply.event_ids.len()), (Some(4), 2));
    /// assert_eq!(reply.event_ids, [event_id("counter", "c-1", 3).to_string(), event_id("counter", "c-1", 4).to_string()]);
    /// ```
    pub fn reply(&self, name: &str, aggregate_id: &str) -> CommandReply {
        match &self.answer {
            Answer::Accepted { version, events, ids } => {
                let ids = match *ids {
                    EventIds::ByVersion => (1..=i64::from(*events)).map(|i| event_id(name, aggregate_id, version.saturating_sub(i64::from(*events)).saturating_add(i)).to_string()).collect(),
                    EventIds::ByCommand { first } => (0..*events).map(|i| event_id_by_command(name, self.command, first.saturating_add(i)).to_string()).collect(),
                };
                CommandReply::accepted(self.command.to_string(), aggregate_id, *version, ids)
            }
            Answer::Rejected(why) => CommandReply::rejected(self.command.to_string(), aggregate_id, why.0.clone(), why.1.clone()),
        }
    }
}

/// The answers to an aggregate's most recent commands, oldest first, at most the number
/// it was asked to keep.
///
/// In the changelog it is one Avro `bytes` value: a format byte (3), then per command its
/// id (16 bytes), a tag, and
/// - tag 4 (accepted, ids by version, chained: its version is the previous accepted
///   answer's plus its event count, as it always is for answers of one aggregate): the
///   event count;
/// - tag 3 (accepted, ids by version, the oldest in the window or not chained): the
///   version and the event count;
/// - tag 2 and tag 0: the same for ids by command ([`EventIds::ByCommand`]), each with the
///   first event index before the event count;
/// - tag 1 (rejected): the reason and the message, each as its length and UTF-8 bytes.
///
/// Numbers are unsigned base-128 varints (as Avro's, without the zig-zag), so an accepted
/// command usually takes 18 bytes. Formats 1 (33 bytes per accepted command: fixed-width
/// little-endian numbers, the version in each) and 2 (tags 0 to 2) are still read. An
/// older Herald cannot read a newer format, so a changelog written by this version cannot
/// be restored by an older one (its engine stops with the decoding error).
///
/// ```
/// use herald_aggregate::stored::{Answer, EventIds, Recent, Remembered};
/// let mut recent = Recent::default();
/// for v in 1..=3 {
///     recent.remember(Remembered { command: uuid::Uuid::from_u128(v), answer: Answer::Accepted { version: v as i64, events: 1, ids: EventIds::ByVersion } }, 2);
/// }
/// assert_eq!(recent.len(), 2);
/// assert!(recent.find(uuid::Uuid::from_u128(1)).is_none());
/// assert_eq!(Recent::decode(&recent.encode()).unwrap(), recent);
/// ```
///
/// Shared until changed: cloning a stored aggregate (each decision does, and the engine
/// keeps a copy of it before a transaction's first change) does not copy the answers;
/// [`Recent::remember`] copies them when they are shared.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Recent(Arc<VecDeque<Remembered>>);

/// The format byte of [`Recent`]'s encoding (3), and of the ones before it.
const FORMAT: u8 = 3;
const FORMAT_2: u8 = 2;
const FORMAT_1: u8 = 1;

/// The answer tags: those of format 2, and those format 3 adds.
const ACCEPTED: u8 = 0;
const REJECTED: u8 = 1;
const CHAINED: u8 = 2;
const NUMBERED: u8 = 3;
const NUMBERED_CHAINED: u8 = 4;

/// A [`Recent`] encoding that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recent answers: {0}")]
pub struct RecentError(String);

impl Recent {
    /// How many answers are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The answers, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Remembered> {
        self.0.iter()
    }

    /// The answer to command `command`, if it is among the recent ones.
    pub fn find(&self, command: Uuid) -> Option<&Remembered> {
        self.0.iter().rev().find(|r| r.command == command)
    }

    /// Remembers `answer`, forgetting the oldest beyond `keep`.
    pub fn remember(&mut self, answer: Remembered, keep: usize) {
        if Arc::get_mut(&mut self.0).is_none() {
            // Shared (the usual case: the decision started from the stored aggregate):
            // copy only the answers that stay, into room for the new one, instead of
            // cloning them all and growing the copy.
            let stay = self.0.len().min(keep.saturating_sub(1));
            let mut copy = VecDeque::with_capacity(stay + 1);
            copy.extend(self.0.iter().skip(self.0.len() - stay).cloned());
            self.0 = Arc::new(copy);
        }
        let answers = Arc::make_mut(&mut self.0);
        answers.push_back(answer);
        while answers.len() > keep {
            answers.pop_front();
        }
    }

    /// The changelog encoding (see the type's docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.0.len() * 20);
        out.push(FORMAT);
        let mut previous: Option<i64> = None;
        for r in self.0.iter() {
            out.extend_from_slice(r.command.as_bytes());
            match &r.answer {
                Answer::Accepted { version, events, ids } => {
                    let chained = previous.and_then(|v| v.checked_add(i64::from(*events))) == Some(*version);
                    out.push(match (ids, chained) {
                        (EventIds::ByVersion, true) => NUMBERED_CHAINED,
                        (EventIds::ByVersion, false) => NUMBERED,
                        (EventIds::ByCommand { .. }, true) => CHAINED,
                        (EventIds::ByCommand { .. }, false) => ACCEPTED,
                    });
                    if !chained {
                        put_varint(&mut out, *version as u64);
                    }
                    if let EventIds::ByCommand { first } = ids {
                        put_varint(&mut out, u64::from(*first));
                    }
                    put_varint(&mut out, u64::from(*events));
                    previous = Some(*version);
                }
                Answer::Rejected(why) => {
                    out.push(REJECTED);
                    for text in [&why.0, &why.1] {
                        put_varint(&mut out, text.len() as u64);
                        out.extend_from_slice(text.as_bytes());
                    }
                }
            }
        }
        out
    }

    /// Reads [`Recent::encode`]'s bytes back (and format 1's, which older versions wrote).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecentError> {
        let mut input = Input(bytes);
        let format = match input.array()? {
            [f @ (FORMAT_1 | FORMAT_2 | FORMAT)] => f,
            [other] => return Err(RecentError(format!("unknown format {other}"))),
        };
        let mut recent = VecDeque::new();
        let mut previous: Option<i64> = None;
        while !input.0.is_empty() {
            let command = Uuid::from_slice(input.take(16)?).map_err(|e| RecentError(e.to_string()))?;
            let chained = |events: u32| {
                let previous = previous.ok_or_else(|| RecentError("a chained answer with no accepted one before it".into()))?;
                previous.checked_add(i64::from(events)).ok_or_else(|| RecentError(format!("version {previous} + {events} overflows")))
            };
            let answer = match (format, input.array()?) {
                (FORMAT_1, [0]) => {
                    let version = i64::from_le_bytes(input.array()?);
                    let first = u32::from_le_bytes(input.array()?);
                    Answer::Accepted { version, events: u32::from_le_bytes(input.array()?), ids: EventIds::ByCommand { first } }
                }
                (FORMAT_1, [1]) => Answer::Rejected(Arc::new((input.text_1()?, input.text_1()?))),
                (FORMAT_2 | FORMAT, [ACCEPTED]) => {
                    let version = input.varint()? as i64;
                    let first = input.u32()?;
                    Answer::Accepted { version, events: input.u32()?, ids: EventIds::ByCommand { first } }
                }
                (FORMAT_2 | FORMAT, [CHAINED]) => {
                    let (first, events) = (input.u32()?, input.u32()?);
                    Answer::Accepted { version: chained(events)?, events, ids: EventIds::ByCommand { first } }
                }
                (FORMAT_2 | FORMAT, [REJECTED]) => Answer::Rejected(Arc::new((input.text()?, input.text()?))),
                (FORMAT, [NUMBERED]) => {
                    let version = input.varint()? as i64;
                    Answer::Accepted { version, events: input.u32()?, ids: EventIds::ByVersion }
                }
                (FORMAT, [NUMBERED_CHAINED]) => {
                    let events = input.u32()?;
                    Answer::Accepted { version: chained(events)?, events, ids: EventIds::ByVersion }
                }
                (_, [tag]) => return Err(RecentError(format!("unknown answer tag {tag} in format {format}"))),
            };
            if let Answer::Accepted { version, events, ids } = answer {
                // Event ids are numbered first..first + events, or by the versions
                // version - events + 1..=version: a damaged record must not make a reply
                // overflow them.
                match ids {
                    EventIds::ByCommand { first } => first.checked_add(events).map(drop).ok_or_else(|| RecentError(format!("event indexes {first} + {events} overflow")))?,
                    EventIds::ByVersion => version.checked_sub(i64::from(events)).map(drop).ok_or_else(|| RecentError(format!("versions {version} - {events} overflow")))?,
                }
                previous = Some(version);
            }
            recent.push_back(Remembered { command, answer });
        }
        Ok(Recent(Arc::new(recent)))
    }
}

/// Avro's (and protobuf's) unsigned base-128 varint.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A cursor over [`Recent`]'s bytes.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecentError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or_else(|| RecentError(format!("{n} bytes expected, {} left", self.0.len())))?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecentError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, RecentError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let [b] = self.array()?;
            // The tenth byte holds the 64th bit only.
            if shift == 63 && b > 1 {
                return Err(RecentError("a varint longer than 64 bits".into()));
            }
            n |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(RecentError("a varint longer than 64 bits".into()))
    }

    fn u32(&mut self) -> Result<u32, RecentError> {
        let n = self.varint()?;
        u32::try_from(n).map_err(|_| RecentError(format!("{n} does not fit 32 bits")))
    }

    fn text(&mut self) -> Result<String, RecentError> {
        let len = usize::try_from(self.varint()?).map_err(|_| RecentError("a text longer than memory".into()))?;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|e| RecentError(e.to_string()))
    }

    /// Format 1's text: a u32 length, little-endian.
    fn text_1(&mut self) -> Result<String, RecentError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|e| RecentError(e.to_string()))
    }
}

impl fmt::Debug for Recent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Serialize for Recent {
    fn serialize<Se: serde::Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Recent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Recent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of herald-aggregate's recent answers")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Recent, E> {
                Recent::decode(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Recent, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Recent::decode(&bytes).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// `herald.aggregate.Stored`: the state's own schema inside.
impl<S: AvroSchema> AvroSchema for Stored<S> {
    fn get_schema() -> Schema {
        let state = serde_json::to_value(S::get_schema()).unwrap_or(serde_json::Value::Null);
        let record = serde_json::json!({
            "type": "record", "name": "Stored", "namespace": "herald.aggregate",
            "fields": [
                {"name": "state", "type": state},
                {"name": "version", "type": "long"},
                {"name": "recent", "type": "bytes", "doc": "herald-aggregate's Recent: see its docs for the layout"},
            ]
        });
        // The state's part is the schema of a Rust type (checked in this crate's tests and
        // by the engine's StateCodec at start-up): a failure here is a programming error.
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

    fn accepted(n: u128, version: i64) -> Remembered {
        Remembered { command: Uuid::from_u128(n), answer: Answer::Accepted { version, events: 1, ids: EventIds::ByVersion } }
    }

    #[test]
    fn a_clone_shares_the_answers_until_one_side_remembers_another() {
        let mut recent = Recent::default();
        for n in 1..=3 {
            recent.remember(accepted(n, n as i64), 3);
        }
        let before = recent.clone();
        assert!(Arc::ptr_eq(&before.0, &recent.0), "a clone copies nothing");
        recent.remember(accepted(4, 4), 3);
        assert!(!Arc::ptr_eq(&before.0, &recent.0));
        let commands = |r: &Recent| r.iter().map(|a| a.command.as_u128()).collect::<Vec<_>>();
        assert_eq!(commands(&before), [1, 2, 3], "the copy kept as it was");
        assert_eq!(commands(&recent), [2, 3, 4]);
        // Shared with room to spare, and shared with fewer to keep than it holds.
        let (mut roomy, mut fewer, mut none) = (before.clone(), before.clone(), before.clone());
        roomy.remember(accepted(5, 5), 5);
        fewer.remember(accepted(5, 5), 2);
        none.remember(accepted(5, 5), 0);
        assert_eq!((commands(&roomy), commands(&fewer), commands(&none)), (vec![1, 2, 3, 5], vec![3, 5], vec![]));
        assert_eq!(commands(&before), [1, 2, 3]);
    }

    fn rejected(n: u128, reason: &str, message: &str) -> Remembered {
        Remembered { command: Uuid::from_u128(n), answer: Answer::Rejected(Arc::new((reason.into(), message.into()))) }
    }

    #[test]
    fn it_round_trips_through_the_engine_changelog_codec() {
        let codec = herald_choreography::changelog::StateCodec::<Stored<Balance>>::new().expect("schema");
        let mut stored = Stored { state: Balance { cents: 5, owner: Some("c".into()) }, version: 2, recent: Recent::default() };
        stored.recent.remember(accepted(1, 2), 2);
        stored.recent.remember(rejected(2, "x", "y ünïcode"), 2);
        let slot = herald_choreography::slot::Slot::new(stored.clone());
        let back = codec.decode(&codec.encode(&slot).expect("encodes")).expect("decodes");
        assert_eq!(back.state(), &stored);
    }

    #[test]
    fn it_remembers_a_bounded_number_of_answers() {
        let mut recent = Recent::default();
        for i in 0..5 {
            recent.remember(accepted(i, i as i64), 3);
        }
        let ids: Vec<u128> = recent.iter().map(|r| r.command.as_u128()).collect();
        assert_eq!(ids, [2, 3, 4]);
        assert!(recent.find(Uuid::from_u128(1)).is_none());
        assert_eq!(recent.find(Uuid::from_u128(3)).map(|r| r.reply("a", "k").version), Some(Some(3)));
    }

    #[test]
    fn answers_give_back_the_reply_they_were() {
        let command = Uuid::new_v4();
        let accepted = Remembered { command, answer: Answer::Accepted { version: 7, events: 2, ids: EventIds::ByVersion } };
        let ids = (6..=7).map(|v| event_id("acct", "a-1", v).to_string()).collect();
        assert_eq!(accepted.reply("acct", "a-1"), CommandReply::accepted(command.to_string(), "a-1", 7, ids));
        // An answer read from a changelog written before format 3: its events' ids were
        // derived from the command.
        let before = Remembered { command, answer: Answer::Accepted { version: 7, events: 2, ids: EventIds::ByCommand { first: 1 } } };
        let ids = (1..3).map(|i| event_id_by_command("acct", command, i).to_string()).collect();
        assert_eq!(before.reply("acct", "a-1"), CommandReply::accepted(command.to_string(), "a-1", 7, ids));
        let refused = Remembered { command, answer: Answer::Rejected(Arc::new(("insufficient-funds".into(), "5 < 7".into()))) };
        assert_eq!(refused.reply("acct", "a-1"), CommandReply::rejected(command.to_string(), "a-1", "insufficient-funds", "5 < 7"));
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let mut recent = Recent::default();
        recent.remember(accepted(1, 1), 4);
        recent.remember(rejected(2, "r", "m"), 4);
        let bytes = recent.encode();
        for cut in 0..bytes.len() {
            let decoded = Recent::decode(&bytes[..cut]);
            // Cut at an entry's end (after the format byte, after the first answer) is a shorter list.
            assert!(decoded.is_err() || cut == 1 || cut == 1 + 16 + 3, "cut at {cut}: {decoded:?}");
        }
        assert!(Recent::decode(&[9]).is_err());
        assert_eq!(Recent::decode(&bytes), Ok(recent));
        // A chained answer needs an accepted one before it.
        let mut orphan = vec![FORMAT];
        orphan.extend_from_slice(Uuid::from_u128(1).as_bytes());
        orphan.extend_from_slice(&[CHAINED, 1, 1]);
        assert!(Recent::decode(&orphan).is_err());
        let mut orphan = vec![FORMAT];
        orphan.extend_from_slice(Uuid::from_u128(1).as_bytes());
        orphan.extend_from_slice(&[NUMBERED_CHAINED, 1]);
        assert!(Recent::decode(&orphan).is_err());
        // Format 2 has no answers with ids by version.
        let mut older = vec![FORMAT_2];
        older.extend_from_slice(Uuid::from_u128(1).as_bytes());
        older.extend_from_slice(&[NUMBERED, 1, 1]);
        assert!(Recent::decode(&older).is_err());
        // Format 1 has no chained answers; a varint of more than 64 bits; event indexes
        // that overflow.
        let mut old = vec![FORMAT_1];
        old.extend_from_slice(Uuid::from_u128(1).as_bytes());
        old.extend_from_slice(&[CHAINED, 1, 1]);
        assert!(Recent::decode(&old).is_err());
        let mut long = vec![FORMAT];
        long.extend_from_slice(Uuid::from_u128(1).as_bytes());
        long.push(ACCEPTED);
        long.extend_from_slice(&[0xFF; 9]);
        long.extend_from_slice(&[0x7F, 0, 1]);
        assert!(Recent::decode(&long).is_err(), "ten varint bytes with more than the 64th bit");
        long[1 + 16 + 1 + 9] = 0x01;
        assert!(Recent::decode(&long).is_ok(), "the 64th bit alone is a u64");
        let mut overflow = vec![FORMAT];
        overflow.extend_from_slice(Uuid::from_u128(1).as_bytes());
        overflow.extend_from_slice(&[ACCEPTED, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 2]);
        assert!(Recent::decode(&overflow).is_err(), "first u32::MAX + 2 events");
        let mut below = vec![FORMAT];
        below.extend_from_slice(Uuid::from_u128(1).as_bytes());
        below.push(NUMBERED);
        below.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 2]);
        assert!(Recent::decode(&below).is_err(), "version i64::MIN - 2 events");
    }

    /// The usual window: accepted commands of one aggregate, each one version on from the
    /// last, with a rejection between them; an answer that does not follow on; and an
    /// answer read from an older changelog (ids by command).
    #[test]
    fn chained_answers_take_18_bytes_and_decode_to_their_versions() {
        let mut recent = Recent::default();
        let answer = |n: u128, version: i64, events: u32, ids: EventIds| Remembered { command: Uuid::from_u128(n), answer: Answer::Accepted { version, events, ids } };
        recent.remember(answer(1, 300, 2, EventIds::ByVersion), 9);
        recent.remember(rejected(2, "insufficient-funds", "5 < 7"), 9);
        for (n, version) in [(3, 301), (4, 302), (5, 303)] {
            recent.remember(accepted(n, version), 9);
        }
        recent.remember(answer(6, 9_000_000_000, 3, EventIds::ByVersion), 9);
        recent.remember(answer(7, 9_000_000_000, 0, EventIds::ByVersion), 9);
        recent.remember(answer(8, 9_000_000_001, 1, EventIds::ByCommand { first: 1 }), 9);
        let bytes = recent.encode();
        let explicit = |v: u64| 16 + 1 + varint_len(v) + 1;
        let rejected_len = 16 + 1 + 1 + "insufficient-funds".len() + 1 + "5 < 7".len();
        assert_eq!(bytes.len(), 1 + explicit(300) + rejected_len + 3 * 18 + explicit(9_000_000_000) + 18 + 19);
        assert_eq!(Recent::decode(&bytes), Ok(recent));
    }

    /// Extreme numbers round-trip too (a version is never negative in practice, but the
    /// encoding does not depend on it).
    #[test]
    fn extreme_numbers_round_trip() {
        let values = [(i64::MIN, 0, 0), (-1, 1, 1), (0, 1, u32::MAX - 1), (i64::MAX - 1, 0, 1), (i64::MAX, 7, 1), (i64::MAX, 0, 0), (5, 0, 0)];
        let mut recent = Recent::default();
        for (n, (version, first, events)) in values.into_iter().enumerate() {
            let ids = if n % 2 == 0 { EventIds::ByCommand { first } } else { EventIds::ByVersion };
            recent.remember(Remembered { command: Uuid::from_u128(n as u128), answer: Answer::Accepted { version, events, ids } }, values.len());
        }
        assert_eq!(Recent::decode(&recent.encode()), Ok(recent));
    }

    fn varint_len(mut n: u64) -> usize {
        let mut len = 1;
        while n >= 0x80 {
            n >>= 7;
            len += 1;
        }
        len
    }

    /// Changelogs written before format 2 are still read.
    #[test]
    fn format_1_is_still_read() {
        let mut bytes = vec![FORMAT_1];
        bytes.extend_from_slice(Uuid::from_u128(1).as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&7i64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(Uuid::from_u128(2).as_bytes());
        bytes.push(1);
        for text in ["no-such-account", "a-9"] {
            bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        let mut want = Recent::default();
        want.remember(Remembered { command: Uuid::from_u128(1), answer: Answer::Accepted { version: 7, events: 2, ids: EventIds::ByCommand { first: 1 } } }, 2);
        want.remember(rejected(2, "no-such-account", "a-9"), 2);
        assert_eq!(Recent::decode(&bytes), Ok(want));
    }

    /// Changelogs written in format 2 are still read, their answers with ids by command.
    #[test]
    fn format_2_is_still_read() {
        let mut bytes = vec![FORMAT_2];
        bytes.extend_from_slice(Uuid::from_u128(1).as_bytes());
        bytes.extend_from_slice(&[ACCEPTED, 7, 1, 2]);
        bytes.extend_from_slice(Uuid::from_u128(2).as_bytes());
        bytes.extend_from_slice(&[CHAINED, 1, 1]);
        let mut want = Recent::default();
        for (n, version, events) in [(1, 7, 2), (2, 8, 1)] {
            want.remember(Remembered { command: Uuid::from_u128(n), answer: Answer::Accepted { version, events, ids: EventIds::ByCommand { first: 1 } } }, 2);
        }
        assert_eq!(Recent::decode(&bytes), Ok(want));
    }
}
