//! API keys: looked up by the SHA-256 of the presented key, so the config holds no key.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::config::ApiKeyConfig;
use super::{Principal, Scopes};
use crate::config::ConfigError;

/// The configured keys by hash.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Principal>,
}

/// Hex SHA-256 of `key`, as `[[auth.api_key]] sha256` wants it.
///
/// ```
/// assert_eq!(herald_gateway::auth::hash_key("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
/// ```
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// The keys of the config; a hash that is not 64 hex digits, or a hash given twice, is
    /// refused (naming the id, never the hash).
    pub fn new(configs: &[ApiKeyConfig]) -> Result<Self, ConfigError> {
        let mut by_hash = HashMap::new();
        for config in configs {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(config.sha256.trim(), &mut hash)
                .map_err(|_| ConfigError::Invalid(format!("api key {}: sha256 must be 64 hex digits", config.id)))?;
            let principal = Principal { id: config.id.clone(), scopes: Scopes::Only(config.scopes.iter().cloned().collect()) };
            if by_hash.insert(hash, principal).is_some() {
                return Err(ConfigError::Invalid(format!("api key {}: the same key is configured twice", config.id)));
            }
        }
        Ok(ApiKeys { by_hash })
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The principal of `key`, if it is a configured key. (The lookup is by hash: timing
    /// can tell at most something about a guess's hash, not about a configured key.)
    pub fn find(&self, key: &str) -> Option<&Principal> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_hash.get(&hash)
    }
}
