//! [`Principal`]: who sent a request, and what it may do.

use std::collections::BTreeSet;

/// The authenticated sender of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its id: an API key's `id`, a token's `sub`, or `anonymous` without authentication.
    pub id: String,
    /// Its scopes.
    pub scopes: Scopes,
}

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scopes {
    /// Everything: the anonymous principal of a gateway without authentication.
    All,
    /// Exactly these.
    Only(BTreeSet<String>),
}

impl Principal {
    /// The principal of every request when no authentication is configured.
    pub fn anonymous() -> Self {
        Principal { id: "anonymous".to_owned(), scopes: Scopes::All }
    }

    /// True when the principal has `scope`.
    pub fn has(&self, scope: &str) -> bool {
        match &self.scopes {
            Scopes::All => true,
            Scopes::Only(set) => set.contains(scope),
        }
    }

    /// The first of `required` the principal lacks, if any.
    pub fn missing<'a>(&self, required: &'a [String]) -> Option<&'a str> {
        required.iter().find(|s| !self.has(s)).map(String::as_str)
    }
}
