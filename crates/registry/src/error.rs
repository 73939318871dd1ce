//! What can go wrong talking to a registry, classified as permanent or transient.

/// A failed registry request.
///
/// [`RegistryError::is_transient`] tells a retry from a rejection: 5xx, 429, timeouts and
/// connection failures are transient (the client already retried them with backoff);
/// everything else, notably 404, is an answer that will not change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry does not know the schema id, subject or schema (HTTP 404).
    #[error("registry: not found ({status}, error {code}: {message})")]
    NotFound {
        /// HTTP status (404).
        status: u16,
        /// Confluent error code: 40401 subject, 40402 version, 40403 schema not found.
        code: i64,
        /// The registry's message.
        message: String,
    },
    /// The registry refused the request: 409 incompatible schema, 422 invalid schema,
    /// 401/403 not allowed, or another 4xx. Not retried by the client; on the read path
    /// the [`Confluent`](crate::Confluent) codec still treats 401/403/407 as transient
    /// (a credential can be fixed without the record changing).
    #[error("registry: request rejected ({status}, error {code}: {message})")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Confluent error code (0 when the body had none).
        code: i64,
        /// The registry's message.
        message: String,
    },
    /// The registry could not answer: 5xx, 429, a timeout or no connection, still failing
    /// after the client's retries.
    #[error("registry unavailable after {attempts} attempts: {reason}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The registry answered 2xx with a body that is not what the API documents.
    #[error("registry: unexpected response: {0}")]
    InvalidResponse(String),
    /// The registry returned a schema that is not valid Avro or not a named type.
    #[error("registry: schema id {id} is not a usable Avro schema: {reason}")]
    InvalidSchema {
        /// The schema id.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The client could not be built (bad URL or TLS setup).
    #[error("registry client: {0}")]
    Client(String),
}

impl RegistryError {
    /// True when asking again later may succeed (the registry was unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }

    /// True when the registry does not know what was asked for (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }
}
