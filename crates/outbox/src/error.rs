//! [`OutboxError`]: what can fail in the outbox, the relay and the inbox.

/// A failure of the outbox, its relay or the inbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The table name is not a plain lower-case SQL identifier.
    #[error("invalid outbox table name {0:?}: use 1 to 40 of [a-z0-9_], starting with a letter or _")]
    InvalidName(String),
    /// The bucket count is out of range.
    #[error("invalid bucket count {0}: use 1 to 4096")]
    InvalidBuckets(u32),
    /// The table exists with another bucket count than this process's: relays would hash
    /// aggregates differently and could relay one aggregate from two places. Returned by
    /// [`OutboxTable::ensure_schema`](crate::OutboxTable::ensure_schema) and by every
    /// [`Outbox::publish`](crate::Outbox::publish), which then writes nothing.
    #[error("outbox table {table} was created with {existing} buckets, this process is configured with {configured}")]
    BucketMismatch {
        /// The table.
        table: String,
        /// Buckets recorded with the table.
        existing: i32,
        /// Buckets this process was given.
        configured: u32,
    },
    /// A relay setting is out of range
    /// ([`RelayOptions::validate`](crate::relay::RelayOptions::validate)): the relay
    /// would spin, be refused by PostgreSQL, or could relay one aggregate from two places.
    #[error("invalid relay option {option}: {reason}")]
    InvalidOption {
        /// The setting (a [`RelayOptions`](crate::relay::RelayOptions) field).
        option: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The event's type is not a member of the topic's family.
    #[error("no schema for event type {0}")]
    UnknownSchema(String),
    /// The event could not be encoded.
    #[error("cannot encode the event: {0}")]
    Encode(String),
    /// The encoded event is larger than the outbox accepts (the broker would refuse it, and
    /// the relay could never publish it).
    #[error("event of {size} bytes is larger than the outbox limit of {limit} bytes")]
    Oversize {
        /// Key, value and headers, in bytes.
        size: usize,
        /// The limit ([`crate::Outbox::max_bytes`]).
        limit: usize,
    },
    /// A PostgreSQL URL that does not parse.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// A relay's PostgreSQL statement got no answer within
    /// [`RelayOptions::statement_timeout`](crate::relay::RelayOptions::statement_timeout):
    /// the connection or the server is stuck. The relay drops the session and reconnects.
    #[error("PostgreSQL did not answer within {0:?}")]
    Unanswered(std::time::Duration),
    /// PostgreSQL refused or failed a statement, or the connection is gone.
    #[error("PostgreSQL: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The Kafka client could not be created.
    #[error("Kafka: {0}")]
    Kafka(#[from] herald_bus::PublishError),
}

impl OutboxError {
    /// True when the same call may succeed later: the database connection failed or the
    /// server is shutting down, restarting, overloaded or did not answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            OutboxError::Postgres(e) => is_transient(e),
            OutboxError::Unanswered(_) => true,
            _ => false,
        }
    }
}

/// True when a PostgreSQL error is about the connection or the server's state rather
/// than the statement: a closed connection, an I/O error, a server shutting down or
/// starting up, too many connections, a serialization failure or deadlock.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 57: operator intervention (admin shutdown, crash
            // shutdown, cannot connect now); 53: insufficient resources; 40: rollback.
            matches!(class, "08" | "57" | "53" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    }
}

/// `error` and its causes: tokio-postgres's own text leaves them out ("error connecting to
/// server", not why; "db error", not the server's message).
fn with_causes(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}
