//! JWT bearer tokens: HS256 with a shared secret, RS256 with public keys from a JWKS file
//! (chosen by the token's `kid`). `exp`, `nbf`, `aud` and `iss` are checked; the
//! principal is `sub`, the scopes `scope` (space-separated) or `scp` (an array).
//!
//! The algorithm is taken from the token only to pick the key: an HS256 token is checked
//! only against the HS256 secret, an RS256 token only against the JWKS keys, and any
//! other algorithm is refused, so a token cannot choose to be verified with the wrong kind
//! of key.

use std::collections::BTreeSet;
use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::config::JwtConfig;
use super::{Principal, Scopes};
use crate::config::ConfigError;

/// Validates bearer tokens.
#[derive(Clone)]
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    rs256: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("hs256", &self.hs256.is_some()).field("rs256_keys", &self.rs256.len()).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
}

/// Why a token was refused (the message names no part of the token).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

impl JwtVerifier {
    /// The verifier of `config`; relative files are relative to `base`.
    pub fn new(config: &JwtConfig, base: &Path) -> Result<Self, ConfigError> {
        let read = |file: &Path| {
            let path = base.join(file);
            std::fs::read(&path).map_err(|source| ConfigError::Read { path, source })
        };
        let hs256 = match &config.hs256_secret_file {
            Some(file) => {
                let mut secret = read(file)?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                if secret.len() < 32 {
                    return Err(ConfigError::Invalid("auth.jwt: the HS256 secret must be at least 32 bytes".to_owned()));
                }
                Some(DecodingKey::from_secret(&secret))
            }
            None => None,
        };
        let mut rs256 = Vec::new();
        if let Some(file) = &config.jwks_file {
            let set: JwkSet = serde_json::from_slice(&read(file)?).map_err(|e| ConfigError::Invalid(format!("auth.jwt: jwks_file: {e}")))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| ConfigError::Invalid(format!("auth.jwt: jwks_file: key {:?}: {e}", jwk.common.key_id)))?;
                rs256.push((jwk.common.key_id.clone(), key));
            }
        }
        if hs256.is_none() && rs256.is_empty() {
            return Err(ConfigError::Invalid("auth.jwt: give hs256_secret_file or jwks_file (with keys)".to_owned()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway_s;
        Ok(JwtVerifier { hs256, rs256, validation })
    }

    /// The principal of a valid token.
    pub fn verify(&self, token: &str) -> Result<Principal, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refused("the bearer token is not a JWT".to_owned()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref().ok_or_else(|| Refused("HS256 tokens are not accepted here".to_owned()))?,
            Algorithm::RS256 => {
                let by_kid = self.rs256.iter().find(|(kid, _)| header.kid.is_some() && *kid == header.kid);
                let only = if self.rs256.len() == 1 && header.kid.is_none() { self.rs256.first() } else { None };
                &by_kid.or(only).ok_or_else(|| Refused("no key for the token's kid".to_owned()))?.1
            }
            other => return Err(Refused(format!("tokens signed with {other:?} are not accepted"))),
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| Refused(describe(e.kind())))?;
        let claims = data.claims;
        let mut scopes: BTreeSet<String> = claims.scope.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();
        scopes.extend(claims.scp.unwrap_or_default());
        Ok(Principal { id: claims.sub, scopes: Scopes::Only(scopes) })
    }
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token has expired".to_owned(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        K::InvalidAudience => "the token is for another audience".to_owned(),
        K::InvalidIssuer => "the token is from another issuer".to_owned(),
        K::InvalidSignature => "the token's signature is not valid".to_owned(),
        K::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        K::InvalidAlgorithm => "the token's algorithm is not accepted".to_owned(),
        _ => "the token is not valid".to_owned(),
    }
}
