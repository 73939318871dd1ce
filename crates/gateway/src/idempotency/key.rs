//! [`Scoped`]: an `Idempotency-Key` scoped to its principal, and what derives from it.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// An `Idempotency-Key` of one principal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scoped {
    /// Hex SHA-256 of principal and key: the record's key in the store and on the topic.
    pub hash: String,
    /// The event id every request with this key gets: a UUIDv8 made from the same hash,
    /// so it is the same on every gateway instance and after a restart.
    pub event_id: Uuid,
}

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

impl Scoped {
    /// The key `key` of `principal`; `None` when the key is empty, longer than
    /// [`MAX_KEY_LEN`] or not visible ASCII.
    ///
    /// ```
    /// use herald_gateway::idempotency::Scoped;
    /// let a = Scoped::new("alice", "k-1").unwrap();
    /// assert_eq!(a, Scoped::new("alice", "k-1").unwrap());
    /// assert_ne!(a.event_id, Scoped::new("bob", "k-1").unwrap().event_id);
    /// assert_eq!(a.event_id.get_version_num(), 8);
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
        let digest: [u8; 32] = hasher.finalize().into();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Some(Scoped { hash: hex::encode(digest), event_id: uuid::Builder::from_custom_bytes(id).into_uuid() })
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
