//! Authentication: who sent a request ([`Principal`]), from an API key (`X-API-Key`) or a
//! JWT bearer token (`Authorization: Bearer`); `401` otherwise. Authorization is per route:
//! the principal must have each of the route's scopes; `403` otherwise.
//!
//! Without an `[auth]` section every request is the [`Principal::anonymous`] principal
//! with every scope (for local runs and the demo). See [`config`] for the format.
//!
//! No credential is ever logged or echoed: problems say what was wrong ("the token has
//! expired", "unknown API key"), never the key or token.

mod api_key;
pub mod config;
mod jwt;
mod principal;

pub use api_key::{hash_key, ApiKeys};
pub use jwt::JwtVerifier;
pub use principal::{Principal, Scopes};

use std::path::Path;

use axum::http::{header, HeaderMap};

use self::config::AuthConfig;
use crate::config::ConfigError;
use crate::problem::Problem;

/// The header API keys come in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Decides who sent a request.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    keys: ApiKeys,
    jwt: Option<JwtVerifier>,
}

impl Authenticator {
    /// No authentication: every request is anonymous.
    pub fn open() -> Self {
        Authenticator::default()
    }

    /// The authenticator of `[auth]`; files are relative to `base`.
    pub fn new(config: &AuthConfig, base: &Path) -> Result<Self, ConfigError> {
        let keys = ApiKeys::new(&config.api_keys)?;
        let jwt = config.jwt.as_ref().map(|j| JwtVerifier::new(j, base)).transpose()?;
        Ok(Authenticator { keys, jwt })
    }

    /// True when requests need credentials.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty() || self.jwt.is_some()
    }

    /// The request's principal, or a `401` problem (never naming the credential).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Problem> {
        if !self.is_enabled() {
            return Ok(Principal::anonymous());
        }
        if let Some(key) = headers.get(API_KEY_HEADER) {
            let key = key.to_str().map_err(|_| Problem::unauthenticated("unknown API key"))?;
            return self.keys.find(key).cloned().ok_or_else(|| Problem::unauthenticated("unknown API key"));
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().unwrap_or("");
            let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim);
            let (Some(token), Some(jwt)) = (token, &self.jwt) else {
                return Err(Problem::unauthenticated("only Bearer tokens are accepted in Authorization"));
            };
            return jwt.verify(token).map_err(|e| Problem::unauthenticated(e.to_string()));
        }
        Err(Problem::unauthenticated(match self.jwt {
            Some(_) => "send an API key in X-API-Key or a token in Authorization: Bearer",
            None => "send an API key in X-API-Key",
        }))
    }
}
