//! The rdkafka context: partitions start where the store says, not where Kafka says.
//!
//! On assignment the hook reads the stored positions from the database and assigns each
//! partition at its position (or at the beginning of the log when none is stored); the
//! group's committed offsets are never used to resume. On revocation it withdraws this
//! member's ownership (a batch still in the store thread then rolls back instead of
//! committing) and waits, up to a deadline, for the batch in flight to finish.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::position::{self, Key};
use crate::store::{Connection, Store};
use crate::worker::{Flight, Ownership};

/// A change of membership, for the poll loop.
#[derive(Debug)]
pub(crate) enum Membership {
    /// Assigned at `position` (`Ok(None)`: from the beginning; `Err`: unknown, the store
    /// could not be read; the loop reads it and seeks before applying anything).
    Assigned { partition: i32, generation: u64, position: Result<Option<i64>, ()> },
    /// Revoked or lost.
    Revoked { partition: i32 },
}

/// State shared by the poll loop, the store thread and the rebalance hooks.
pub(crate) struct Shared {
    pub key: Key,
    pub store: Arc<dyn Store>,
    pub reader: Mutex<Option<Box<dyn Connection>>>,
    pub ownership: Ownership,
    pub generation: AtomicU64,
    pub flight: Arc<Flight>,
    pub membership: Mutex<Vec<Membership>>,
    pub revoke_timeout: Duration,
    pub poll_exceeded: AtomicBool,
    pub last_client_error: Mutex<Option<String>>,
}

impl Shared {
    /// Reads the stored positions on a short-lived thread of its own: the hook runs on
    /// the poll loop's (async) thread, where a synchronous database client must not block.
    fn read_positions(&self) -> Result<HashMap<i32, i64>, String> {
        std::thread::scope(|s| s.spawn(|| self.read_positions_blocking()).join()).unwrap_or_else(|_| Err("position reader panicked".into()))
    }

    fn read_positions_blocking(&self) -> Result<HashMap<i32, i64>, String> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            *reader = Some(self.store.connect().map_err(|e| e.to_string())?);
        }
        let Some(conn) = reader.as_mut() else { return Err("no connection".into()) };
        let read = (|| {
            let mut tx = conn.read()?;
            let positions = position::load(tx.as_tx(), &self.key)?;
            tx.rollback()?;
            Ok::<_, crate::store::StoreError>(positions)
        })();
        if read.is_err() {
            *reader = None;
        }
        read.map_err(|e| e.to_string())
    }

    pub(crate) fn take_membership(&self) -> Vec<Membership> {
        std::mem::take(&mut *self.membership.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn assign(&self, consumer: &BaseConsumer<Context>, tpl: &mut TopicPartitionList) {
        let positions = self.read_positions();
        if let Err(e) = &positions {
            tracing::error!(error = %e, "cannot read positions on assignment; partitions start once they can be read");
        }
        let mut events = Vec::new();
        {
            let mut owned = self.ownership.lock().unwrap_or_else(|p| p.into_inner());
            let partitions: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
            for (topic, partition) in partitions {
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                owned.insert(partition, generation);
                let position = match &positions {
                    Ok(p) => Ok(p.get(&partition).copied()),
                    Err(_) => Err(()),
                };
                let offset = match position {
                    Ok(Some(next)) => Offset::Offset(next),
                    // Unknown positions start paused at the beginning; the loop seeks.
                    Ok(None) | Err(()) => Offset::Beginning,
                };
                if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                    tracing::error!(error = %e, partition, "cannot set the start offset");
                }
                tracing::info!(partition, ?position, "partition assigned");
                events.push(Membership::Assigned { partition, generation, position });
            }
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = assigned {
            tracing::error!(error = %e, "assign failed");
        }
        if positions.is_err() {
            let _ = consumer.pause(tpl);
        }
        self.membership.lock().unwrap_or_else(|p| p.into_inner()).extend(events);
    }

    fn revoke(&self, consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList) {
        let started = Instant::now();
        let revoked: HashSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        {
            let mut owned = self.ownership.lock().unwrap_or_else(|p| p.into_inner());
            for p in &revoked {
                owned.remove(p);
            }
        }
        // A batch in the store thread now rolls back at its ownership check; wait for it
        // so the next owner does not race a transaction of ours.
        if !self.flight.wait_clear(&revoked, started + self.revoke_timeout) {
            tracing::warn!("batch still in flight at the revoke deadline; its compare-and-set fences it");
        }
        let unassigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = unassigned {
            tracing::warn!(error = %e, "unassign failed");
        }
        let mut events = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        events.extend(revoked.iter().map(|&partition| Membership::Revoked { partition }));
        tracing::info!(partitions = revoked.len(), elapsed_ms = started.elapsed().as_millis() as u64, "partitions revoked");
    }
}

/// The projector's rdkafka context.
pub(crate) struct Context {
    pub shared: Arc<Shared>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::PartitionEOF)) {
            return; // Not an error: the loop learns of it from `recv`.
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PollExceeded) {
            self.shared.poll_exceeded.store(true, Ordering::Relaxed);
        }
        tracing::error!(%error, reason, "kafka client error");
        *self.shared.last_client_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.shared.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.shared.revoke(consumer, tpl),
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(error = %code, "rebalance error");
                self.shared.revoke(consumer, tpl);
            }
        }
    }
}
