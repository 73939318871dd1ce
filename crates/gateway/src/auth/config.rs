//! `[auth]` in `gateway.toml`.
//!
//! ```toml
//! [[auth.api_key]]             # clients send it as `X-API-Key: <key>`
//! id = "checkout"              # the principal's id
//! sha256 = "9f86d0…"           # hex SHA-256 of the key: printf %s "$KEY" | sha256sum
//! scopes = ["orders:write"]
//!
//! [auth.jwt]                   # clients send `Authorization: Bearer <token>`
//! issuer = "https://id.example.com"   # `iss` must equal it
//! audience = "herald-gateway"         # `aud` must contain it
//! hs256_secret_file = "secret.txt"    # HS256 key (relative to the config file); optional
//! jwks_file = "jwks.json"             # RS256 public keys, chosen by `kid`; optional
//! leeway_s = 5                        # clock skew allowed on exp and nbf (default 5)
//! ```
//!
//! A token's principal is its `sub`; its scopes are `scope` (space-separated, OAuth 2.0)
//! or `scp` (an array). `exp` is required and checked, `nbf` is checked when present.

use std::path::PathBuf;

use serde::Deserialize;

/// `[auth]`: without it (no API keys, no JWT) authentication is off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys, stored hashed.
    #[serde(default, rename = "api_key")]
    pub api_keys: Vec<ApiKeyConfig>,
    /// JWT bearer tokens.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

/// One API key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The principal's id.
    pub id: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Its scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig").field("id", &self.id).field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

/// JWT validation settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// File holding the HS256 secret (its bytes, a trailing newline removed).
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// JWKS file with the RS256 public keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_leeway() -> u64 {
    5
}
