//! [`Published`]: where an acknowledged event landed.

use uuid::Uuid;

/// Where a published event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The event id (`ce_id`).
    pub id: Uuid,
    /// Partition it was written to.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}
