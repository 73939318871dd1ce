//! Who may see the dashboard: the scope check, and the browser's login sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use super::Dashboard;
use crate::auth::{Principal, API_KEY_HEADER};
use crate::problem::Problem;

/// The session cookie's name.
pub const COOKIE: &str = "herald_ui";

/// The header a `POST` made with the session cookie must carry.
pub const UI_HEADER: &str = "x-herald-ui";

/// Most sessions kept at once; the oldest go first beyond it.
const MAX_SESSIONS: usize = 10_000;

/// Login sessions, by the SHA-256 of their token (the tokens themselves are only in the
/// browsers' cookies).
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    by_hash: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Sessions {
    /// Sessions lasting `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Sessions { ttl, by_hash: Mutex::default() }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, Instant)>> {
        self.by_hash.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for `principal`; returns its token (64 hex digits, 256 random bits).
    pub fn open(&self, principal: Principal) -> String {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, (_, expires)| *expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, (_, expires))| *expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(Sha256::digest(token.as_bytes()).into(), (principal, now + self.ttl));
        token
    }

    /// The principal of a live session.
    pub fn find(&self, token: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut map = self.map();
        match map.get(&hash) {
            Some((principal, expires)) if *expires > Instant::now() => Some(principal.clone()),
            Some(_) => {
                map.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn close(&self, token: &str) {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.map().remove(&hash);
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session token in the request's cookies, if any.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl Dashboard {
    /// The request's principal if it may see the dashboard: a live session, else the
    /// request's own credentials. `401` without either, `403` without the scope; a `POST`
    /// authenticated by the cookie alone without [`UI_HEADER`] is `403` too.
    pub fn admit(&self, method: &Method, headers: &HeaderMap) -> Result<Principal, Problem> {
        let from_session = session_token(headers).and_then(|t| self.sessions.find(t));
        let by_cookie = from_session.is_some();
        let principal = match from_session {
            Some(p) => p,
            None => self.auth.authenticate(headers)?,
        };
        if !principal.has(&self.config.scope) {
            return Err(Problem::forbidden(format!("the dashboard needs the scope {}", self.config.scope)));
        }
        if by_cookie && *method != Method::GET && headers.get(UI_HEADER).is_none() {
            return Err(Problem::forbidden(format!("a dashboard POST needs the header {UI_HEADER}")));
        }
        Ok(principal)
    }
}

/// How many `POST /ui/login` a gateway answers per minute, all clients together, after a
/// first burst of as many: guessing keys through the login form gets `429` with
/// `Retry-After`. Counted per gateway, not per client (behind a proxy every client has the
/// proxy's address); a person logs in once per session, so the limit is far above their
/// use, and a flood delays their login by seconds, not more.
pub const LOGINS_PER_MINUTE: u32 = 10;

/// The limit on login attempts ([`LOGINS_PER_MINUTE`]): governor's GCRA, as the routes'
/// rate limits.
pub struct LoginLimit(governor::DefaultDirectRateLimiter);

impl LoginLimit {
    /// A full bucket of [`LOGINS_PER_MINUTE`].
    pub fn new() -> Self {
        let per_minute = std::num::NonZeroU32::new(LOGINS_PER_MINUTE).unwrap_or(std::num::NonZeroU32::MIN);
        LoginLimit(governor::RateLimiter::direct(governor::Quota::per_minute(per_minute)))
    }

    /// `Ok` when an attempt may go on now; otherwise how long until the next may.
    pub fn check(&self) -> Result<(), Duration> {
        use governor::clock::Clock;
        self.0.check().map_err(|not_until| not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
    }
}

impl Default for LoginLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// The body of `POST /ui/login`.
#[derive(Debug, serde::Deserialize)]
pub struct Login {
    /// An API key, or a JWT.
    pub credential: String,
}

/// `POST /ui/login {"credential": KEY_OR_TOKEN}`: `200 {"principal"}` with the session
/// cookie; `401` for a credential that is not valid, `403` without the scope; `429` with
/// `Retry-After` past [`LOGINS_PER_MINUTE`].
pub async fn login(State(dashboard): State<Arc<Dashboard>>, body: Option<Json<Login>>) -> Response {
    if let Err(wait) = dashboard.logins.check() {
        tracing::warn!(retry_in = ?wait, "dashboard login refused: over {LOGINS_PER_MINUTE} attempts a minute");
        return Problem::rate_limited(wait).into_response();
    }
    let Some(Json(login)) = body else {
        return Problem::malformed("send {\"credential\": \"API key or token\"} as JSON").into_response();
    };
    let credential = login.credential.trim();
    if !dashboard.auth.is_enabled() {
        return Json(serde_json::json!({ "principal": Principal::anonymous().id, "open": true })).into_response();
    }
    let principal = match authenticate(&dashboard, credential) {
        Ok(p) => p,
        Err(problem) => {
            tracing::info!(status = problem.status, "dashboard login refused");
            return problem.into_response();
        }
    };
    if !principal.has(&dashboard.config.scope) {
        tracing::info!(principal = %principal.id, "dashboard login refused: no {} scope", dashboard.config.scope);
        return Problem::forbidden(format!("the dashboard needs the scope {}", dashboard.config.scope)).into_response();
    }
    tracing::info!(principal = %principal.id, "dashboard login");
    let id = principal.id.clone();
    let token = dashboard.sessions.open(principal);
    let max_age = dashboard.config.session_minutes.max(1) * 60;
    let cookie = format!("{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    let mut response = Json(serde_json::json!({ "principal": id })).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The principal of an API key, else of a bearer token.
fn authenticate(dashboard: &Dashboard, credential: &str) -> Result<Principal, Problem> {
    if credential.is_empty() {
        return Err(Problem::unauthenticated("give an API key or a token"));
    }
    let mut as_key = HeaderMap::new();
    let value = HeaderValue::from_str(credential).map_err(|_| Problem::unauthenticated("unknown API key"))?;
    as_key.insert(API_KEY_HEADER, value.clone());
    match dashboard.auth.authenticate(&as_key) {
        Ok(p) => Ok(p),
        Err(refused) if credential.split('.').count() == 3 => {
            let mut as_token = HeaderMap::new();
            let bearer = HeaderValue::from_str(&format!("Bearer {credential}")).map_err(|_| refused.clone())?;
            as_token.insert(header::AUTHORIZATION, bearer);
            dashboard.auth.authenticate(&as_token)
        }
        Err(refused) => Err(refused),
    }
}

/// `POST /ui/logout`: ends the session and clears the cookie.
pub async fn logout(State(dashboard): State<Arc<Dashboard>>, method: Method, headers: HeaderMap) -> Response {
    if let Err(problem) = dashboard.admit(&method, &headers) {
        return problem.into_response();
    }
    if let Some(token) = session_token(&headers) {
        dashboard.sessions.close(token);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("herald_ui=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_finds_its_principal_until_closed() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let token = sessions.open(Principal::anonymous());
        assert_eq!(token.len(), 64);
        assert_eq!(sessions.find(&token).map(|p| p.id), Some("anonymous".to_owned()));
        assert_eq!(sessions.find("nope"), None);
        sessions.close(&token);
        assert_eq!(sessions.find(&token), None);
    }

    #[test]
    fn an_expired_session_is_gone() {
        let sessions = Sessions::new(Duration::ZERO);
        let token = sessions.open(Principal::anonymous());
        assert_eq!(sessions.find(&token), None);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; herald_ui=abc; b=2"));
        assert_eq!(session_token(&headers), Some("abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("herald_uix=1"));
        assert_eq!(session_token(&headers), None);
    }
}
