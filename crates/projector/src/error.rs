//! Errors: what a projection reports, and what stops a projector.

use crate::store::StoreError;

/// A projection could not apply an event.
///
/// [`ProjectionError::Transient`] is retried with backoff; [`ProjectionError::Permanent`]
/// is not (the event is dead-lettered, or its partition paused, by policy). A
/// [`ProjectionError::Store`] error is retried as a whole batch, for as long as it takes
/// and never dead-lettered, when the store says it is transient (a lost connection, a lock
/// timeout, a deadlock, a statement timeout, a full disk, a failover: see
/// [`StoreError::is_transient`]), and treated as permanent otherwise (a syntax error, a
/// constraint violation, bad data in the projection's own SQL).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Retrying may help (a dependency was briefly unavailable).
    #[error("{0}")]
    Transient(String),
    /// This event can never be applied (it contradicts the view's invariants).
    #[error("{0}")]
    Permanent(String),
    /// The store refused a statement.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ProjectionError {
    /// True when retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            ProjectionError::Permanent(_) => true,
            ProjectionError::Transient(_) => false,
            ProjectionError::Store(e) => !e.is_transient(),
        }
    }

    /// True for a store conflict that concerns the whole transaction rather than one event.
    pub fn is_store_conflict(&self) -> bool {
        matches!(self, ProjectionError::Store(e) if e.is_transient())
    }
}

/// A batch could not be applied ([`Projection::apply_batch`](crate::Projection::apply_batch)).
///
/// With the index of the failing event, the projector treats it as that event's failure
/// (retried or dead-lettered, as from [`Projection::apply`](crate::Projection::apply));
/// without one ([`From`] a [`ProjectionError`] or [`StoreError`], so `?` works), it rolls
/// the transaction back and applies the batch again event by event with `apply`, which
/// names the event.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
#[non_exhaustive]
pub struct BatchError {
    /// The index, in the batch's events, of the event that failed, if known.
    pub index: Option<usize>,
    /// Why.
    #[source]
    pub error: ProjectionError,
}

impl BatchError {
    /// The event at `index` of the batch failed with `error`.
    pub fn at(index: usize, error: ProjectionError) -> Self {
        BatchError { index: Some(index), error }
    }
}

impl From<ProjectionError> for BatchError {
    fn from(error: ProjectionError) -> Self {
        BatchError { index: None, error }
    }
}

impl From<StoreError> for BatchError {
    fn from(error: StoreError) -> Self {
        BatchError { index: None, error: error.into() }
    }
}

/// A projector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// The store could not be reached or migrated.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The projection's migration failed.
    #[error("migration of {projection}: {source}")]
    Migrate {
        /// The projection.
        projection: String,
        /// Why.
        #[source]
        source: ProjectionError,
    },
    /// The Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The dead-letter producer could not be created.
    #[error("dead-letter producer: {0}")]
    Publisher(#[from] herald_bus::PublishError),
    /// The dead-letter topic could not be created.
    #[error("dead-letter topic: {0}")]
    Admin(#[from] herald_bus::admin::AdminError),
    /// The consumer could not start, or stopped on a fatal condition (authentication,
    /// a deleted topic, a fatal client error, a current-thread runtime).
    #[error("consumer: {0}")]
    Consumer(#[from] herald_bus::ConsumerError),
    /// The topic's partitions or end offsets could not be read (a topic that does not
    /// exist, a stop point of a rebuild that cannot be known).
    #[error("end offsets: {0}")]
    Offsets(#[from] crate::status::OffsetsError),
    /// A rebuild finished without having owned and finished a single partition: nothing
    /// was built, so nothing is swapped in.
    #[error("rebuild of {projection} version {version}: no partition of {topic} was read to its stop point; not swapping")]
    NothingRebuilt {
        /// The projection.
        projection: String,
        /// The version that was being built.
        version: u32,
        /// The topic.
        topic: String,
    },
    /// The store thread stopped unexpectedly.
    #[error("the store thread stopped: {0}")]
    StoreThread(String),
    /// A stop point names a partition the topic does not have, or a negative offset: it
    /// could never be reached.
    #[error("stop point: {0}")]
    InvalidStop(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_classify() {
        assert!(ProjectionError::Permanent("x".into()).is_permanent());
        assert!(!ProjectionError::Transient("x".into()).is_permanent());
        let busy = ProjectionError::Store(StoreError::Statement { message: "busy".into(), transient: true });
        assert!(!busy.is_permanent() && busy.is_store_conflict());
        let syntax = ProjectionError::Store(StoreError::Statement { message: "syntax".into(), transient: false });
        assert!(syntax.is_permanent() && !syntax.is_store_conflict());
    }
}
