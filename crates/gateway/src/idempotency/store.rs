//! [`Store`]: the idempotency records this instance knows, and the requests in progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

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

#[derive(Debug)]
enum Entry {
    InProgress,
    Done(Stored),
}

/// What to do with a request that has an `Idempotency-Key`.
#[derive(Debug)]
pub enum Begin {
    /// Publish; then [`InProgress::finish`].
    Fresh(InProgress),
    /// Answer the stored `202` again.
    Replay(Accepted),
    /// The key was used with another request: `422`.
    Conflict,
    /// A request with this key is being handled right now: `409`.
    Busy,
}

/// The records, shared by the handlers and the topic reader.
#[derive(Debug, Default)]
pub struct Store {
    entries: Mutex<HashMap<String, Entry>>,
    ttl_ms: i64,
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
    /// An empty store keeping records for `ttl_ms`.
    pub fn new(ttl_ms: i64) -> Arc<Store> {
        Arc::new(Store { entries: Mutex::default(), ttl_ms })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Records a finished request read from the topic (another instance's, or this one's
    /// before a restart). A request in progress here keeps going.
    pub fn learn(&self, hash: String, stored: Stored) {
        let mut entries = self.lock();
        if !matches!(entries.get(&hash), Some(Entry::InProgress)) {
            entries.insert(hash, Entry::Done(stored));
        }
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
    fn replays_conflicts_busy_and_frees_a_failed_key() {
        let store = Store::new(1000);
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
}
