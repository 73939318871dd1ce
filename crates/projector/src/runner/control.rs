//! Operator commands for a partition stopped at a poison record ([`OnPoison::Pause`](super::OnPoison::Pause)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// What the operator decided for a stopped partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Deliver the record again.
    Retry,
    /// Dead-letter it and move on.
    Skip,
}

/// Operator commands for a running projector: retry or skip the record a partition's
/// circuit is open at. Cloned handles act on the same projector (and, passed to
/// [`ProjectorBuilder::handles`](super::ProjectorBuilder::handles), on its successor).
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Partitions whose circuit is open, each waiting for a decision.
    waiting: Arc<Mutex<HashMap<i32, oneshot::Sender<Decision>>>>,
}

impl Control {
    /// Closes the circuit of `partition`: its failing record is tried again. False when
    /// the partition has no open circuit in this process.
    pub fn retry(&self, partition: i32) -> bool {
        self.decide(partition, Decision::Retry)
    }

    /// Dead-letters the failing record of `partition` and moves on. False when the
    /// partition has no open circuit in this process.
    pub fn skip(&self, partition: i32) -> bool {
        self.decide(partition, Decision::Skip)
    }

    fn decide(&self, partition: i32, decision: Decision) -> bool {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&partition);
        waiting.is_some_and(|tx| tx.send(decision).is_ok())
    }

    /// Opens the circuit of `partition`: the returned receiver gets the operator's
    /// decision (one waiter per partition, the latest wins).
    pub(crate) fn wait(&self, partition: i32) -> oneshot::Receiver<Decision> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(partition, tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_reaches_only_an_open_circuit_once() {
        let control = Control::default();
        assert!(!control.skip(0), "no circuit open");
        let mut rx = control.wait(0);
        assert!(control.clone().retry(0));
        assert_eq!(rx.try_recv().ok(), Some(Decision::Retry));
        assert!(!control.skip(0), "already decided");
    }
}
