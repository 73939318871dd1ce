//! The projector's poison policy as a dead-letter layer: dead-letter the record
//! ([`OnPoison::DeadLetter`]), or stop the partition there until an operator retries or
//! skips it ([`OnPoison::Pause`]).

use std::sync::Arc;

use async_trait::async_trait;
use herald_bus::consumer::OwnedRecord;
use herald_bus::dead_letter::Failure;
use herald_bus::runtime::dead_letter::{DeadLetters, Letters, Sent};
use tokio_util::sync::CancellationToken;

use super::board::{Block, Board};
use super::control::{Control, Decision};
use super::policy::OnPoison;

/// Dead letters of a projector, by its [`OnPoison`] policy.
pub(crate) struct PoisonPolicy {
    pub dead_letters: DeadLetters,
    pub policy: OnPoison,
    pub control: Control,
    pub board: Arc<Board>,
}

#[async_trait]
impl Letters for PoisonPolicy {
    async fn send(&self, record: &OwnedRecord, failure: &Failure, cancel: &CancellationToken) -> Sent {
        let partition = record.partition();
        self.board.error(partition, format!("offset {}: {} ({})", record.offset(), failure.reason, failure.stage.as_str()));
        if self.policy == OnPoison::Pause {
            tracing::error!(partition, offset = record.offset(), reason = %failure.reason, "poison record: circuit open until an operator acts");
            let decision = self.control.wait(partition);
            self.board.with(partition, |p| p.block = Some(Block::Open(failure.reason.clone())));
            let decided = tokio::select! {
                decided = decision => decided,
                _ = cancel.cancelled() => return Sent::Cancelled,
            };
            match decided {
                Ok(Decision::Retry) => {
                    tracing::info!(partition, offset = record.offset(), "operator: retry");
                    self.board.with(partition, |p| p.block = None);
                    return Sent::Retry;
                }
                Ok(Decision::Skip) => tracing::info!(partition, offset = record.offset(), "operator: skip (dead-letter)"),
                Err(_) => return Sent::Cancelled,
            }
        }
        self.board.with(partition, |p| p.block = Some(Block::DeadLettering));
        let sent = self.dead_letters.send(record, failure, cancel).await;
        match &sent {
            Sent::Unwritable(why) => {
                let reason = format!("dead letter cannot be written: {why} (record failed: {})", failure.reason);
                self.board.error(partition, format!("offset {}: {reason}", record.offset()));
                self.board.with(partition, |p| p.block = Some(Block::Parked(reason)));
            }
            _ => self.board.with(partition, |p| p.block = None),
        }
        sent
    }

    async fn flush(&self) {
        self.dead_letters.flush().await;
    }

    /// A partition stopped at a poison record waits for an operator, not for its dead
    /// letter (which the default report would say, asking whether the topic is missing).
    fn waiting_for(&self, record: &OwnedRecord, failure: &Failure) -> Option<String> {
        let partition = record.partition();
        let mut open = false;
        self.board.with(partition, |p| open = matches!(p.block, Some(Block::Open(_))));
        open.then(|| {
            format!(
                "offset {}: stopped at a poison record ({}): waiting for an operator to retry or skip it (POST /partitions/{partition}/retry or /skip)",
                record.offset(),
                failure.reason
            )
        })
    }
}
