//! [`Store`]: the idempotency records this instance knows, the requests in progress, and
//! the claims read from the topic.
//!
//! Across instances, a key belongs to the first live claim for it in the topic's order
//! ([`Store::claimed`]): every instance reads the same partition in the same order, so
//! they all agree on the owner without asking each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::key::Scoped;
use crate::handler::Accepted;

/// One finished request, as kept in memory and on the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The `202` it got.
    pub accepted: Accepted,
    /// When, in epoch milliseconds (records older than the TTL are ignored).
    pub at_ms: i64,
}

/// A request's claim on its key, written to the topic before it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Unique to the request.
    pub nonce: String,
    /// When it was made, in epoch milliseconds (claims expire, see [`Store::new`]).
    pub at_ms: i64,
}

/// A record of the idempotency topic (JSON; the key is the key's hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogRecord {
    /// A finished request: its `202`.
    Done(Stored),
    /// A request claims the key.
    Claim {
        /// The claim.
        claim: Claim,
    },
    /// The request with this nonce failed: its claim is withdrawn.
    Release {
        /// The claim's nonce.
        release: String,
    },
}

#[derive(Debug)]
enum Entry {
    InProgress,
    Done(Stored),
}

/// What to do with a request that has an `Idempotency-Key`.
#[derive(Debug)]
pub enum Begin {
    /// Claim the key ([`Idempotency::claim`](super::Idempotency::claim)), publish, then
    /// [`InProgress::finish`].
    Fresh(InProgress),
    /// Answer the stored `202` again.
    Replay(Accepted),
    /// The key was used with another request: `422`.
    Conflict,
    /// A request with this key is being handled right now: `409`.
    Busy,
}

/// What the topic's order says of a request's claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Claimed {
    /// Its claim came first: publish.
    Won,
    /// The key was finished meanwhile (by another instance): answer its `202` again.
    Replay(Accepted),
    /// The key was finished meanwhile with another request: `422`.
    Conflict,
    /// Another request's live claim came first: `409`.
    Busy,
}

/// What the topic says, as read so far.
#[derive(Debug, Default)]
struct Log {
    /// Each key's live claim, the first in the topic's order.
    owners: HashMap<String, Claim>,
    /// Each partition's next offset to read.
    read: HashMap<i32, i64>,
}

/// The records, shared by the handlers and the topic reader.
#[derive(Debug, Default)]
pub struct Store {
    entries: Mutex<HashMap<String, Entry>>,
    log: Mutex<Log>,
    /// Woken when the reader moved on.
    advanced: Notify,
    /// Why the reader's last check of its client failed, if it did.
    reader_error: Mutex<Option<String>>,
    ttl_ms: i64,
    claim_ttl_ms: i64,
}

/// A fresh request in progress. Dropped without [`InProgress::finish`] (the request
/// failed), the key is free again.
#[derive(Debug)]
#[must_use]
pub struct InProgress {
    store: Arc<Store>,
    hash: String,
    fingerprint: String,
    finished: bool,
}

impl Store {
    /// An empty store keeping records for `ttl_ms`; a claim blocks its key for at most
    /// `claim_ttl_ms` (when its request died before finishing or withdrawing it).
    pub fn new(ttl_ms: i64, claim_ttl_ms: i64) -> Arc<Store> {
        Arc::new(Store { ttl_ms, claim_ttl_ms, ..Store::default() })
    }

    /// Records the outcome of the reader's last check of its client (see
    /// [`log`](super::log)'s `CHECK_EVERY`).
    pub fn reader_checked(&self, outcome: Result<(), String>) {
        *self.reader_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = outcome.err();
    }

    /// Why the reader cannot read the topic, while its last check failed.
    pub fn reader_error(&self) -> Option<String> {
        self.reader_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides about a request with `key` and `fingerprint` at `now_ms`.
    pub fn begin(self: &Arc<Self>, key: &Scoped, fingerprint: &str, now_ms: i64) -> Begin {
        let mut entries = self.lock();
        match entries.get(&key.hash) {
            Some(Entry::Done(stored)) if now_ms - stored.at_ms <= self.ttl_ms => {
                return if stored.fingerprint == fingerprint { Begin::Replay(stored.accepted.clone()) } else { Begin::Conflict };
            }
            Some(Entry::InProgress) => return Begin::Busy,
            _ => {}
        }
        entries.insert(key.hash.clone(), Entry::InProgress);
        Begin::Fresh(InProgress { store: self.clone(), hash: key.hash.clone(), fingerprint: fingerprint.to_owned(), finished: false })
    }

    /// Takes a record read from the topic at `partition`/`offset` (another instance's, or
    /// this one's, also before a restart), in the topic's order.
    pub fn read(&self, hash: String, record: LogRecord, partition: i32, offset: i64) {
        match record {
            LogRecord::Done(stored) => {
                self.log().owners.remove(&hash);
                // A request in progress here for the key has lost its claim, or is the
                // one that finished: either way this is the key's answer.
                self.lock().insert(hash, Entry::Done(stored));
            }
            LogRecord::Claim { claim } => self.claimed(hash, claim),
            LogRecord::Release { release } => {
                let mut log = self.log();
                if log.owners.get(&hash).is_some_and(|owner| owner.nonce == release) {
                    log.owners.remove(&hash);
                }
            }
        }
        self.advance(partition, offset + 1);
    }

    /// A claim read from the topic: it owns the key unless the key is finished or a live
    /// claim came before it. "Live" is judged by the claims' own times, so every instance
    /// reading the topic decides the same.
    fn claimed(&self, hash: String, claim: Claim) {
        let finished = matches!(self.lock().get(&hash), Some(Entry::Done(stored)) if claim.at_ms - stored.at_ms <= self.ttl_ms);
        if finished {
            return;
        }
        let mut log = self.log();
        if log.owners.get(&hash).is_some_and(|owner| claim.at_ms <= owner.at_ms + self.claim_ttl_ms) {
            return;
        }
        log.owners.insert(hash, claim);
    }

    /// The reader is at `next` in `partition` (nothing before it left to read).
    pub fn advance(&self, partition: i32, next: i64) {
        let mut log = self.log();
        let at = log.read.entry(partition).or_default();
        if next > *at {
            *at = next;
            drop(log);
            self.advanced.notify_waiters();
        }
    }

    /// Waits until the reader is past `offset` in `partition`; false at `deadline`.
    pub async fn read_past(&self, partition: i32, offset: i64, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.advanced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.log().read.get(&partition).is_some_and(|next| *next > offset) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// What the topic, read past the claim `nonce` of `progress`, says of it.
    pub fn decide(&self, progress: &InProgress, nonce: &str) -> Claimed {
        if self.log().owners.get(&progress.hash).is_some_and(|owner| owner.nonce == nonce) {
            return Claimed::Won;
        }
        match self.lock().get(&progress.hash) {
            Some(Entry::Done(stored)) if stored.fingerprint == progress.fingerprint => Claimed::Replay(stored.accepted.clone()),
            Some(Entry::Done(_)) => Claimed::Conflict,
            _ => Claimed::Busy,
        }
    }

    /// Forgets what is older than the records' TTL at `now_ms`: finished keys (which
    /// [`Store::begin`] already treats as unknown) and claims (long expired: a claim
    /// blocks its key for at most the claim TTL, far shorter). Returns how many were
    /// forgotten. The topic's reader calls it every minute, so memory holds one TTL's keys.
    pub fn prune(&self, now_ms: i64) -> usize {
        let old = |at_ms: i64| now_ms - at_ms > self.ttl_ms;
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, entry| !matches!(entry, Entry::Done(stored) if old(stored.at_ms)));
        let mut forgotten = before - entries.len();
        drop(entries);
        let mut log = self.log();
        let before = log.owners.len();
        log.owners.retain(|_, claim| !old(claim.at_ms));
        forgotten += before - log.owners.len();
        forgotten
    }

    /// Number of records (finished or in progress).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl InProgress {
    /// The record key (hex hash).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The request published `accepted`: later requests with the key replay it.
    pub fn finish(mut self, accepted: Accepted, now_ms: i64) -> Stored {
        self.finished = true;
        let stored = Stored { fingerprint: self.fingerprint.clone(), accepted, at_ms: now_ms };
        self.store.lock().insert(self.hash.clone(), Entry::Done(stored.clone()));
        stored
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if !self.finished {
            let mut entries = self.store.lock();
            if matches!(entries.get(&self.hash), Some(Entry::InProgress)) {
                entries.remove(&self.hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(offset: i64) -> Accepted {
        Accepted { id: uuid::Uuid::nil(), topic: "t".into(), partition: 0, offset }
    }

    #[test]
    fn prune_forgets_keys_and_claims_older_than_the_ttl() {
        let store = Store::new(1000, 100);
        let (old, fresh, claimed) = (Scoped::new("a", "old").unwrap_or_else(|| panic!("valid key")), Scoped::new("a", "fresh").unwrap_or_else(|| panic!("valid key")), Scoped::new("a", "claimed").unwrap_or_else(|| panic!("valid key")));
        let Begin::Fresh(done) = store.begin(&old, "fp", 0) else { panic!("fresh") };
        done.finish(accepted(1), 0);
        let Begin::Fresh(done) = store.begin(&fresh, "fp", 900) else { panic!("fresh") };
        done.finish(accepted(2), 900);
        let Begin::Fresh(in_progress) = store.begin(&Scoped::new("a", "live").unwrap_or_else(|| panic!("valid key")), "fp", 0) else { panic!("fresh") };
        store.read(claimed.hash.clone(), claim("n", 0), 0, 0);
        assert_eq!(store.len(), 3);
        assert_eq!(store.prune(1000), 0, "nothing older than the TTL yet");
        assert_eq!(store.prune(1500), 2, "the old key and the old claim");
        assert_eq!(store.len(), 2, "the fresh key and the request in progress stay");
        assert!(matches!(store.begin(&fresh, "fp", 1500), Begin::Replay(a) if a.offset == 2));
        assert!(store.log().owners.is_empty());
        drop(in_progress);
    }

    #[test]
    fn replays_conflicts_busy_and_frees_a_failed_key() {
        let store = Store::new(1000, 100);
        let key = Scoped::new("alice", "k").unwrap_or_else(|| panic!("valid key"));
        let Begin::Fresh(first) = store.begin(&key, "fp", 0) else { panic!("fresh") };
        assert!(matches!(store.begin(&key, "fp", 0), Begin::Busy));
        drop(first);
        let Begin::Fresh(second) = store.begin(&key, "fp", 0) else { panic!("a failed request frees the key") };
        second.finish(accepted(7), 10);
        assert!(matches!(store.begin(&key, "fp", 20), Begin::Replay(a) if a.offset == 7));
        assert!(matches!(store.begin(&key, "other", 20), Begin::Conflict));
        assert!(matches!(store.begin(&key, "other", 2000), Begin::Fresh(_)), "expired after the TTL");
    }

    fn claim(nonce: &str, at_ms: i64) -> LogRecord {
        LogRecord::Claim { claim: Claim { nonce: nonce.into(), at_ms } }
    }

    #[test]
    fn the_first_live_claim_in_the_topic_wins_and_a_finished_key_replays() {
        let store = Store::new(1000, 100);
        let key = Scoped::new("alice", "k").unwrap_or_else(|| panic!("valid key"));
        let Begin::Fresh(mine) = store.begin(&key, "fp", 0) else { panic!("fresh") };
        // Another instance's claim comes first in the topic: this request is busy.
        store.read(key.hash.clone(), claim("theirs", 0), 0, 0);
        store.read(key.hash.clone(), claim("mine", 1), 0, 1);
        assert_eq!(store.decide(&mine, "mine"), Claimed::Busy);
        // They finish: the key's answer is theirs.
        let stored = Stored { fingerprint: "fp".into(), accepted: accepted(9), at_ms: 5 };
        store.read(key.hash.clone(), LogRecord::Done(stored), 0, 2);
        assert_eq!(store.decide(&mine, "mine"), Claimed::Replay(accepted(9)));
        drop(mine);

        // A withdrawn claim frees the key; an expired one does not block.
        let other = Scoped::new("alice", "k2").unwrap_or_else(|| panic!("valid key"));
        let Begin::Fresh(second) = store.begin(&other, "fp", 0) else { panic!("fresh") };
        store.read(other.hash.clone(), claim("a", 10), 1, 0);
        store.read(other.hash.clone(), LogRecord::Release { release: "a".into() }, 1, 1);
        store.read(other.hash.clone(), claim("b", 20), 1, 2);
        assert_eq!(store.decide(&second, "b"), Claimed::Won);
        store.read(other.hash.clone(), claim("c", 200), 1, 3);
        assert_eq!(store.decide(&second, "c"), Claimed::Won, "b's claim expired after 100 ms");
        assert_eq!(store.decide(&second, "b"), Claimed::Busy);
    }

    #[test]
    fn records_round_trip_as_json_and_old_done_records_still_read() {
        let done = LogRecord::Done(Stored { fingerprint: "fp".into(), accepted: accepted(3), at_ms: 1 });
        for record in [done.clone(), claim("n", 2), LogRecord::Release { release: "n".into() }] {
            let json = serde_json::to_vec(&record).unwrap_or_default();
            assert_eq!(serde_json::from_slice::<LogRecord>(&json).ok(), Some(record));
        }
        let LogRecord::Done(stored) = done else { panic!("done") };
        let old = serde_json::to_vec(&stored).unwrap_or_default();
        assert!(matches!(serde_json::from_slice::<LogRecord>(&old), Ok(LogRecord::Done(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_reader_ends_when_it_passes_the_offset_or_at_the_deadline() {
        let store = Store::new(1000, 100);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        assert!(!store.read_past(0, 4, deadline).await, "nothing read: the deadline");
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.read_past(0, 4, tokio::time::Instant::now() + std::time::Duration::from_secs(1)).await })
        };
        tokio::task::yield_now().await;
        store.advance(0, 4);
        store.advance(0, 5);
        assert!(waiter.await.unwrap_or(false));
    }
}
