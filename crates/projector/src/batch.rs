//! What travels from the poll loop to the store thread, and back.

use std::sync::Arc;

use herald_bus::dead_letter::Failure;
use herald_bus::Envelope;

use crate::error::ProjectionError;
use crate::store::StoreError;

/// A record, decoded (or why it could not be).
pub(crate) struct Item<F> {
    pub offset: i64,
    pub decoded: Result<Envelope<F>, Failure>,
}

/// What the store thread does with one record.
pub(crate) enum Action {
    /// Apply it to the view.
    Apply,
    /// It was dead-lettered (acknowledged): record why and move past it.
    Skip(Failure),
}

/// The records of one partition in a batch: applied in order, and the position moved
/// from `from` to `to` by compare-and-set.
pub(crate) struct Slice<F> {
    pub partition: i32,
    pub generation: u64,
    pub from: Option<i64>,
    pub to: i64,
    pub items: Vec<(Arc<Item<F>>, Action)>,
}

impl<F> Slice<F> {
    /// True when every record is a decoded event to apply (no dead letter to record):
    /// such slices are applied together through `Projection::apply_batch`.
    pub fn mergeable(&self) -> bool {
        self.items.iter().all(|(item, action)| matches!(action, Action::Apply) && item.decoded.is_ok())
    }
}

/// One transaction's worth of records.
pub(crate) struct Batch<F> {
    pub slices: Vec<Slice<F>>,
}

impl<F> Batch<F> {
    /// The number of records.
    pub fn events(&self) -> usize {
        self.slices.iter().map(|s| s.items.len()).sum()
    }

    /// True when it may share a transaction with other batches (only events to apply).
    pub fn mergeable(&self) -> bool {
        self.slices.iter().all(Slice::mergeable)
    }
}


/// What became of a batch. Every outcome but `Committed` committed nothing.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed: each partition's new position and the number of records applied.
    Committed { positions: Vec<(i32, i64, usize)> },
    /// The projection failed on one record.
    EventFailed { partition: i32, offset: i64, error: ProjectionError },
    /// The stored position was not where the batch started: another member moved it.
    Fenced { partition: i32, stored: Option<i64> },
    /// A partition of the batch was revoked before the commit.
    Revoked,
    /// Another version of the view is live now (a rebuild swapped it in).
    Superseded { live: u32 },
    /// The store failed (connection, commit); the batch may be sent again.
    StoreFailed(StoreError),
}
