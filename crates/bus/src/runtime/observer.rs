//! A read-only view of the runtime's partition queues, for status pages.

use std::sync::atomic::Ordering;

use super::context::Shared;

/// One partition's queue, as [`Observer::partitions`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLoad {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records received and not yet finished by the sink.
    pub records: usize,
    /// Their bytes, as the flow control counts them.
    pub bytes: usize,
    /// Paused in the client by the flow control.
    pub paused: bool,
}

/// Reads the runtime's partition queues (see [`Runtime::observer`](super::Runtime::observer)); empty once the
/// runtime is gone.
#[derive(Clone)]
pub struct Observer {
    pub(crate) shared: std::sync::Weak<Shared>,
}

impl Observer {
    /// The partitions this member has received records of.
    pub fn partitions(&self) -> Vec<PartitionLoad> {
        let Some(shared) = self.shared.upgrade() else { return Vec::new() };
        let slots = shared.lock();
        slots
            .iter()
            .flat_map(|(topic, slots)| {
                slots.iter().map(move |(&partition, slot)| PartitionLoad {
                    topic: topic.clone(),
                    partition,
                    records: slot.records.load(Ordering::Acquire) + slot.pending.len(),
                    bytes: slot.bytes.load(Ordering::Acquire),
                    paused: slot.paused,
                })
            })
            .collect()
    }
}

