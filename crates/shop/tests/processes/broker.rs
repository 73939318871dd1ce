//! The private broker (herald-testkit's `PrivateBroker`) of the test that restarts it.
//!
//! It runs with `controlled.shutdown.enable=false`. A controlled shutdown of a broker that
//! holds the only replica of a partition leaves the partition without a leader for a
//! moment, and a transaction whose markers the coordinator sends in that moment hangs for
//! good: the coordinator takes a leaderless partition for a deleted one and skips its
//! marker ("Couldn't find leader endpoint for partitions ... likely deleted already and
//! hence can be skipped" in the broker log), then records the transaction as complete, so
//! neither `transaction.timeout.ms` nor any client ever ends it (`kafka-transactions.sh
//! describe-producers` shows it open, `describe` shows it complete; only
//! `kafka-transactions.sh abort` does). Seen in about half of this test's runs on this
//! single-node broker: changelog, output and `__consumer_offsets` partitions held by a
//! transaction forever. In a cluster where partitions have other replicas, leadership
//! moves to one of them instead; a single node shut down without the controlled step
//! keeps its leaders to the end, and its coordinator completes an unfinished transaction's
//! markers after the restart, as after a crash. What this test is about is the clients
//! living through a broker outage; the engine reports a hanging transaction it runs into
//! (see herald-choreography's `engine::restore`).

use herald_testkit::PrivateBroker;

/// A private broker named after `name`, without the controlled shutdown (see above).
pub fn without_controlled_shutdown(name: &str) -> PrivateBroker {
    let mut broker = PrivateBroker::new(name);
    broker.extra_properties = "controlled.shutdown.enable=false".into();
    broker
}
