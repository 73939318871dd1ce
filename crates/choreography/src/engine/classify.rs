//! The three classes of transaction errors, decided in one place.
//!
//! librdkafka marks a transactional error as retriable (call again), abortable (abort the
//! transaction, rewind, go on) or fatal (the producer is unusable: fenced by a newer
//! instance with the same `transactional.id`, or out of sequence). Everything it does not
//! mark, and every timeout of the final commit, is fatal: the engine rebuilds the producer,
//! whose `init_transactions` fences the old one and has the broker finish what it left
//! open. A commit that failed otherwise than by an abortable error (timed out, retried in
//! vain, fatal) may have reached the transaction coordinator, so the broker may finish it
//! by committing, not aborting ([`outcome_unknown`]): the engine then learns which it was
//! (from a record the transaction wrote, or the group's committed offsets) before
//! reacting to anything again.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What to do after a transaction call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnClass {
    /// Call the same function again (after a short backoff).
    Retriable,
    /// Abort the transaction, restore the state from before it, process its inputs again.
    Abortable,
    /// Destroy the producer, build a new one (`init_transactions` fences the old one),
    /// restore the state from before the transaction, process its inputs again.
    Fatal,
}

/// The transaction call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnCall {
    /// `init_transactions`.
    Init,
    /// `begin_transaction`.
    Begin,
    /// Producing a record inside the transaction (or its delivery report).
    Send,
    /// `send_offsets_to_transaction`.
    SendOffsets,
    /// `commit_transaction`.
    Commit,
    /// `abort_transaction`.
    Abort,
}

/// Classifies `error` from `call`.
///
/// ```
/// use herald_choreography::engine::{classify, TxnCall, TxnClass};
/// use rdkafka::error::{KafkaError, RDKafkaErrorCode};
/// let fenced = KafkaError::Global(RDKafkaErrorCode::ProducerFenced);
/// assert_eq!(classify(TxnCall::Commit, &fenced), TxnClass::Fatal);
/// let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
/// assert_eq!(classify(TxnCall::Send, &full), TxnClass::Retriable);
/// ```
pub fn classify(call: TxnCall, error: &KafkaError) -> TxnClass {
    if let KafkaError::Transaction(e) = error {
        if e.is_fatal() {
            return TxnClass::Fatal;
        }
        if call == TxnCall::Commit && matches!(e.code(), RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut) {
            return TxnClass::Fatal;
        }
        if e.txn_requires_abort() {
            return TxnClass::Abortable;
        }
        if e.is_retriable() {
            return TxnClass::Retriable;
        }
        return TxnClass::Fatal;
    }
    let Some(code) = error.rdkafka_error_code() else { return TxnClass::Fatal };
    match code {
        RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch | RDKafkaErrorCode::Fatal | RDKafkaErrorCode::TransactionalIdAuthorizationFailed | RDKafkaErrorCode::FencedInstanceId | RDKafkaErrorCode::OutOfOrderSequenceNumber => TxnClass::Fatal,
        RDKafkaErrorCode::QueueFull if call == TxnCall::Send => TxnClass::Retriable,
        RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut if call == TxnCall::Commit => TxnClass::Fatal,
        RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::CoordinatorLoadInProgress | RDKafkaErrorCode::NotCoordinator | RDKafkaErrorCode::CoordinatorNotAvailable | RDKafkaErrorCode::ConcurrentTransactions => TxnClass::Retriable,
        // A delivery that failed, a stale group generation, a record the broker refused:
        // the transaction cannot commit, the producer is fine.
        RDKafkaErrorCode::MessageTimedOut
        | RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::IllegalGeneration
        | RDKafkaErrorCode::UnknownMemberId
        | RDKafkaErrorCode::RebalanceInProgress
        | RDKafkaErrorCode::UnknownTopicOrPartition
        | RDKafkaErrorCode::InvalidRecord
        | RDKafkaErrorCode::State
        | RDKafkaErrorCode::PurgeQueue
        | RDKafkaErrorCode::PurgeInflight => TxnClass::Abortable,
        _ => TxnClass::Fatal,
    }
}

/// Whether `error` from `call` leaves the transaction's outcome unknown: any failure of
/// `commit_transaction` but one librdkafka marks as requiring an abort (the transaction
/// could not commit). Its `EndTxn` may have reached the coordinator before the error (a
/// timeout, a broker gone away while the retries ran out, a fatal error from elsewhere):
/// then the broker completes the commit; or not: then the next producer's
/// `init_transactions` aborts it. Aborting and reacting again would write the
/// transaction's events twice in the first case, so the engine learns which it was.
///
/// ```
/// use herald_choreography::engine::{outcome_unknown, TxnCall};
/// use rdkafka::error::{KafkaError, RDKafkaErrorCode};
/// let timed_out = KafkaError::Global(RDKafkaErrorCode::OperationTimedOut);
/// assert!(outcome_unknown(TxnCall::Commit, &timed_out));
/// assert!(!outcome_unknown(TxnCall::SendOffsets, &timed_out), "nothing was committed yet");
/// let gone = KafkaError::Global(RDKafkaErrorCode::CoordinatorNotAvailable);
/// assert!(outcome_unknown(TxnCall::Commit, &gone), "retried in vain: the EndTxn may have landed");
/// assert!(outcome_unknown(TxnCall::Commit, &KafkaError::Global(RDKafkaErrorCode::ProducerFenced)));
/// let refused = KafkaError::Global(RDKafkaErrorCode::IllegalGeneration);
/// assert!(!outcome_unknown(TxnCall::Commit, &refused), "abortable: it did not commit");
/// ```
pub fn outcome_unknown(call: TxnCall, error: &KafkaError) -> bool {
    if call != TxnCall::Commit {
        return false;
    }
    match error {
        KafkaError::Transaction(e) => !e.txn_requires_abort(),
        other => classify(call, other) != TxnClass::Abortable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Global(code)
    }

    #[test]
    fn fencing_and_unknown_errors_are_fatal() {
        for code in [RDKafkaErrorCode::ProducerFenced, RDKafkaErrorCode::InvalidProducerEpoch, RDKafkaErrorCode::Fatal, RDKafkaErrorCode::FencedInstanceId, RDKafkaErrorCode::BrokerNotAvailable] {
            assert_eq!(classify(TxnCall::Commit, &global(code)), TxnClass::Fatal, "{code:?}");
        }
        assert_eq!(classify(TxnCall::Commit, &KafkaError::Canceled), TxnClass::Fatal, "no code: fatal");
    }

    #[test]
    fn a_commit_timeout_is_fatal_elsewhere_a_timeout_is_retried() {
        assert_eq!(classify(TxnCall::Commit, &global(RDKafkaErrorCode::OperationTimedOut)), TxnClass::Fatal);
        assert_eq!(classify(TxnCall::SendOffsets, &global(RDKafkaErrorCode::OperationTimedOut)), TxnClass::Retriable);
        assert_eq!(classify(TxnCall::Init, &global(RDKafkaErrorCode::CoordinatorLoadInProgress)), TxnClass::Retriable);
        assert_eq!(classify(TxnCall::Send, &KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)), TxnClass::Retriable);
    }

    #[test]
    fn a_failed_delivery_or_a_stale_generation_aborts() {
        assert_eq!(classify(TxnCall::Send, &KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)), TxnClass::Abortable);
        assert_eq!(classify(TxnCall::SendOffsets, &global(RDKafkaErrorCode::IllegalGeneration)), TxnClass::Abortable);
        assert_eq!(classify(TxnCall::SendOffsets, &global(RDKafkaErrorCode::UnknownMemberId)), TxnClass::Abortable);
        assert_eq!(classify(TxnCall::Send, &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)), TxnClass::Abortable);
    }
}
