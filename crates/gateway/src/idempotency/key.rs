//! [`Scoped`]: an `Idempotency-Key` scoped to its principal, and what derives from it.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// An `Idempotency-Key` of one principal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scoped {
    /// Hex SHA-256 of principal and key: the record's key in the store and on the topic.
    pub hash: String,
}

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

impl Scoped {
    /// The key `key` of `principal`; `None` when the key is empty, longer than
    /// [`MAX_KEY_LEN`] or not visible ASCII and spaces (a structured-field string, as the
    /// IETF's Idempotency-Key draft has it, may hold spaces).
    ///
    /// ```
    /// use herald_gateway::idempotency::Scoped;
    /// let a = Scoped::new("alice", "k-1").unwrap();
    /// assert_eq!(a, Scoped::new("alice", "k-1").unwrap());
    /// assert_ne!(a, Scoped::new("bob", "k-1").unwrap());
    /// assert!(Scoped::new("alice", "").is_none());
    /// ```
    pub fn new(principal: &str, key: &str) -> Option<Scoped> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return None;
        }
        let mut hasher = Sha256::new();
        hasher.update((principal.len() as u64).to_be_bytes());
        hasher.update(principal.as_bytes());
        hasher.update(key.as_bytes());
        Some(Scoped { hash: hex::encode(hasher.finalize()) })
    }

    /// The event id of the request with this key and `fingerprint` ([`fingerprint`]): a
    /// UUIDv8 made from both, so the same request gets the same id on every gateway
    /// instance and after a restart, and another request under the same key (accepted when
    /// the first one failed, or after the key's TTL) gets another id. (From the key alone,
    /// a consumer that dedupes on `ce_id` would drop the second event as a repeat of the
    /// first, though the gateway answered `202` for it.)
    ///
    /// ```
    /// use herald_gateway::idempotency::{fingerprint, Scoped};
    /// let key = Scoped::new("alice", "k-1").unwrap();
    /// let (a, b) = (fingerprint("orders", "/orders", b"{\"n\":1}"), fingerprint("orders", "/orders", b"{\"n\":2}"));
    /// assert_eq!(key.event_id(&a), Scoped::new("alice", "k-1").unwrap().event_id(&a));
    /// assert_ne!(key.event_id(&a), key.event_id(&b));
    /// assert_ne!(key.event_id(&a), Scoped::new("bob", "k-1").unwrap().event_id(&a));
    /// assert_eq!(key.event_id(&a).get_version_num(), 8);
    /// ```
    pub fn event_id(&self, fingerprint: &str) -> Uuid {
        let mut hasher = Sha256::new();
        hasher.update(self.hash.as_bytes());
        hasher.update(fingerprint.as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(id).into_uuid()
    }
}

/// The fingerprint of a request: route, path and body bytes. A replay must match it.
pub fn fingerprint(route: &str, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for part in [route.as_bytes(), path.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(body);
    hex::encode(hasher.finalize())
}
