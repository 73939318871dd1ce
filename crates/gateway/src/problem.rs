//! [`Problem`]: every error response, as RFC 9457 problem details
//! (`application/problem+json`).
//!
//! Members: `type` (a `urn:herald:gateway:<slug>` URI naming the kind of problem),
//! `title`, `status`, `detail`; a body that does not fit its schema adds `errors`, one
//! entry per problem with `field` (`lines[0].quantity`, `(root)` for the body itself),
//! `pointer` (the same as a JSON pointer, `/lines/0/quantity`) and `detail`
//! (`expected int, got string "two"`). `503` and `429` carry `Retry-After`.
//!
//! Query routes add `502` (`upstream-error`), `504` (`upstream-timeout`) and `503`
//! (`no-instance`, with `Retry-After`).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_schema::json::{Path, Segment};
use serde::Serialize;

/// One error response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Field problems of an invalid body.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// `Retry-After` in seconds, for `429` and `503`.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

/// A field of the body that does not fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// Path as `lines[0].quantity`, `(root)` for the body itself.
    pub field: String,
    /// The same path as a JSON pointer (`/lines/0/quantity`).
    pub pointer: String,
    /// What is wrong and what was expected.
    pub detail: String,
}

impl FieldError {
    /// The error at `path`.
    pub fn at(path: &Path, detail: impl Into<String>) -> Self {
        let pointer: String = path
            .segments()
            .iter()
            .map(|s| match s {
                Segment::Field(f) | Segment::Key(f) => format!("/{}", escape(f)),
                Segment::Index(i) => format!("/{i}"),
            })
            .collect();
        FieldError { field: path.to_string(), pointer, detail: detail.into() }
    }

    /// The error at a top-level field.
    pub fn field(name: &str, detail: impl Into<String>) -> Self {
        FieldError { field: name.to_owned(), pointer: format!("/{}", escape(name)), detail: detail.into() }
    }
}

/// A JSON pointer reference token (RFC 6901: `~` as `~0`, `/` as `~1`).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl Problem {
    pub(crate) fn new(status: StatusCode, slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Problem { kind: format!("urn:herald:gateway:{slug}"), title, status: status.as_u16(), detail: detail.into(), errors: Vec::new(), retry_after: None }
    }

    /// `400`: the body is not JSON, or not an object.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "malformed-body", "The body is not a JSON object", detail)
    }

    /// `400`: a parameter in the request's path is not valid (`..` as an id, a partition
    /// that is not a number).
    pub fn invalid_parameter(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-parameter", "A path parameter is not valid", detail)
    }

    /// `400`: the `Idempotency-Key` header is not a usable key.
    pub fn bad_idempotency_key(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-idempotency-key", "The Idempotency-Key is not valid", detail)
    }

    /// `400`: the body does not fit the event's schema.
    pub fn invalid(event_type: &str, errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("the body does not fit {event_type}: {} {}", one.field, one.detail),
            _ => format!("the body does not fit {event_type}"),
        };
        Problem { errors, ..Problem::new(StatusCode::BAD_REQUEST, "invalid-body", "The body does not fit the event's schema", detail) }
    }

    /// `401`: no credentials, or credentials that are not valid. The detail never
    /// contains the credential.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Authentication required", detail)
    }

    /// `403`: authenticated, but without a scope the route needs.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Missing scope", detail)
    }

    /// `404`: no route for this path.
    pub fn not_found(path: &str) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "No such route", format!("no route for {path}"))
    }

    /// `405`: the path exists, the method does not.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", format!("{path} has no {method} route"))
    }

    /// `415`: the body's declared `Content-Type` is not JSON.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", detail)
    }

    /// `408`: the body did not arrive within the deadline.
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout", detail)
    }

    /// `413`: the body is larger than `max_body_bytes` (or the broker's record limit).
    pub fn too_large(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Body too large", detail)
    }

    /// `422`: an `Idempotency-Key` reused with a different body or route.
    pub fn idempotency_conflict() -> Self {
        let detail = "this Idempotency-Key was used with a different request (route, path or body)";
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused with a different request", detail)
    }

    /// `409`: a request with the same `Idempotency-Key` is being handled now.
    pub fn busy() -> Self {
        let detail = "a request with this Idempotency-Key is in progress; retry when it is done";
        Problem { retry_after: Some(Duration::from_secs(1)), ..Problem::new(StatusCode::CONFLICT, "idempotency-key-in-progress", "Request in progress", detail) }
    }

    /// `429`: over the route's rate for this principal.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let detail = format!("rate limit reached; retry in {} s", seconds(retry_after));
        Problem { retry_after: Some(retry_after), ..Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests", detail) }
    }

    /// `503`: the event could not be written (broker unavailable, circuit open, deadline).
    /// Nothing was acknowledged; retry after `retry_after`, with the same
    /// `Idempotency-Key` to be safe.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        Problem { retry_after: Some(retry_after), ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Event store unavailable", detail) }
    }

    /// `503`: no instance of the query route's service can answer (none registered and
    /// live, or every one's circuit open). Retry after `retry_after`.
    pub fn no_instance(detail: impl Into<String>, retry_after: Duration) -> Self {
        Problem { retry_after: Some(retry_after), ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no-instance", "No instance available", detail) }
    }

    /// `504`: the instance asked did not answer within the route's deadline.
    pub fn upstream_timeout(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::GATEWAY_TIMEOUT, "upstream-timeout", "The service did not answer in time", detail)
    }

    /// `502`: the instance asked failed (a 5xx, a broken connection, an unreadable answer).
    pub fn upstream_error(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_GATEWAY, "upstream-error", "The service failed", detail)
    }

    /// `500`: a bug or a misconfiguration; the detail says which.
    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", detail)
    }

    /// The status as a [`StatusCode`].
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub fn seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme to use.
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"herald-gateway\""));
        }
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds(after)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_millis(1001)), 2);
        assert_eq!(seconds(Duration::ZERO), 1);
    }

    #[test]
    fn invalid_body_names_the_field_and_pointer() {
        let path = Path::root();
        let root = FieldError::at(&path, "x");
        assert_eq!((root.field.as_str(), root.pointer.as_str()), ("(root)", ""));
        let problem = Problem::invalid("t.E", vec![FieldError::field("a/b", "expected int")]);
        let json = serde_json::to_value(&problem).unwrap_or_default();
        assert_eq!(json["errors"][0]["pointer"], "/a~1b");
        assert_eq!(json["status"], 400);
    }
}

/// [`axum::extract::Path`] whose rejection is a [`Problem`] (`400 invalid-parameter`, or
/// `500` for a route that has no such parameter), like every other error, where axum's
/// own is plain text.
///
/// ```
/// use axum::{Router, routing::get};
/// use herald_gateway::problem::Params;
///
/// async fn letter(Params((topic, offset)): Params<(String, i64)>) -> String {
///     format!("{topic} at {offset}")
/// }
/// // `GET /letters/orders/x` answers `400 invalid-parameter` as a problem document.
/// let app: Router = Router::new().route("/letters/{topic}/{offset}", get(letter));
/// # drop(app);
/// ```
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Problem> {
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(params)) => Ok(Params(params)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(Problem::invalid_parameter(e.body_text())),
            Err(other) => Err(Problem::internal(other.body_text())),
        }
    }
}
