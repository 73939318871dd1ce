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
//!
//! A restart without the controlled step can leave one too: in CI (stop 15) the producers
//! of three roles, whose transactions had timed out while the broker was away, aborted
//! them as the broker came back (each abort ended in `INVALID_TXN_STATE`), and every changelog partition of those transactions
//! stayed held for good. So the test does what the engine's error asks of an operator
//! ([`abort_hanging`]) and counts it; the invariants are checked after it as before.

use herald_testkit::PrivateBroker;

/// Waits until `done` holds, for at most `within` (panics then, naming `what` and what it
/// aborted), looking for hanging transactions every 15 s meanwhile and aborting them
/// ([`abort_hanging`]). Returns what it aborted.
pub async fn until_healed<F, Fut>(broker: &PrivateBroker, within: std::time::Duration, what: &str, mut done: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (deadline, mut looked) = (std::time::Instant::now() + within, std::time::Instant::now());
    let mut aborted = Vec::new();
    while !done().await {
        if looked.elapsed() > std::time::Duration::from_secs(15) {
            let now = abort_hanging(broker).await;
            // Said at once: a check that fails inside `done` must be read with it.
            if !now.is_empty() {
                eprintln!("hanging transactions aborted as an operator would, while waiting for {what}: {now:?}");
            }
            aborted.extend(now);
            looked = std::time::Instant::now();
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {within:?} waiting for: {what} (hanging transactions aborted: {aborted:?})");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    aborted
}

/// What an operator does for a hanging transaction: lists them with Kafka's own
/// `kafka-transactions.sh find-hanging` and aborts each with `abort`. Returns the
/// `topic/partition@offset` of each transaction aborted (and of each that ended by itself
/// between the listing and the abort, marked so).
///
/// find-hanging lists an open transaction whose coordinator does not list its partition, and
/// errs towards listing: it reads the partition's producers first and the coordinator's
/// transactions next, so a live transaction that completes in between is listed (CI, stop
/// 16: the abort then found nothing open at that offset), and so is one whose coordinator
/// is still loading after the restart (its transactional id is not found). Aborting a live
/// transaction would break its atomicity, so two guards: only transactions whose producer
/// last wrote to the partition over a minute ago are looked at (`--max-transaction-timeout
/// 1`, in minutes; a live one ends within the engine's 10 s transaction timeout and the
/// broker's 10 s abort check), and only one listed by two listings in a row (the same
/// producer, epoch and start offset) is aborted. A local run with the second guard alone
/// still listed one twice that had ended by the abort (recorded "ended by itself").
///
/// **The order of the aborts.** `abort` ends a transaction on one partition, so one that
/// hangs on several is ended one partition at a time, and the engine that wrote it keeps
/// running meanwhile. Its producer's next transaction that writes to a partition where its
/// own transaction still hangs joins it there (the broker keeps the open transaction's
/// first offset), and that transaction's commit marker commits the hanging records too. So
/// the partitions that hold the engine back are aborted last: its changelog (a restore
/// waits for it) and `__consumer_offsets` (a `read_committed` member's offset fetch waits
/// for a pending transactional commit). Aborting them first let the engine react again
/// while its old output still hung, and its next transaction committed that output beside
/// the new one: one event twice (CI, stop 29: `shop.orders/3@33` "ended by itself" after
/// the changelog partitions were aborted). A producer with a row in only one of the two
/// listings waits for the next round, so that none of its partitions is left out.
pub async fn abort_hanging(broker: &PrivateBroker) -> Vec<String> {
    let first = find_hanging(broker).await;
    if first.is_empty() {
        return Vec::new();
    }
    let second = find_hanging(broker).await;
    let bootstrap = broker.config().bootstrap().to_owned();
    let mut aborted = Vec::new();
    for hanging in in_abort_order(&first, &second) {
        let [topic, partition, .., start] = &hanging[..] else { continue };
        let args = ["tool", "kafka-transactions", "--bootstrap-server", &bootstrap, "abort", "--topic", topic, "--partition", partition, "--start-offset", start];
        match broker.try_script_run(&args).await {
            Ok(_) => aborted.push(format!("{topic}/{partition}@{start}")),
            // The abort tool looks the transaction up again: one that ended since is no longer there.
            Err(output) if output.contains("Could not find any open transactions") => aborted.push(format!("{topic}/{partition}@{start} (ended by itself)")),
            Err(output) => panic!("kafka-transactions abort {topic}/{partition}@{start} failed:\n{output}"),
        }
    }
    aborted
}

/// The rows to abort, of two listings in a row (see [`abort_hanging`]): those of the
/// producers whose rows both listings show alike, each producer's changelog and
/// `__consumer_offsets` rows after its others.
fn in_abort_order<'a>(first: &'a [[String; 5]], second: &'a [[String; 5]]) -> Vec<&'a [String; 5]> {
    use std::collections::BTreeSet;
    let rows_of = |listing: &'a [[String; 5]], producer: &str| -> BTreeSet<&'a [String; 5]> { listing.iter().filter(|row| row[2] == producer).collect() };
    let holds_back = |row: &[String; 5]| row[0] == "__consumer_offsets" || row[0].ends_with(".changelog");
    let producers: BTreeSet<&str> = second.iter().map(|row| row[2].as_str()).collect();
    let mut rows = Vec::new();
    for producer in producers.into_iter().filter(|producer| rows_of(first, producer) == rows_of(second, producer)) {
        let mut mine: Vec<_> = rows_of(second, producer).into_iter().collect();
        mine.sort_by_key(|row| holds_back(row));
        rows.extend(mine);
    }
    rows
}

/// `kafka-transactions find-hanging` on the broker: per transaction listed, its topic,
/// partition, producer id, producer epoch and start offset.
async fn find_hanging(broker: &PrivateBroker) -> Vec<[String; 5]> {
    let bootstrap = broker.config().bootstrap().to_owned();
    let listed = broker.script_run(&["tool", "kafka-transactions", "--bootstrap-server", &bootstrap, "find-hanging", "--broker-id", "1", "--max-transaction-timeout", "1"]).await;
    // Columns: Topic Partition ProducerId ProducerEpoch CoordinatorEpoch StartOffset ...
    listed
        .lines()
        .skip(1)
        .filter_map(|row| match row.split_whitespace().collect::<Vec<_>>()[..] {
            [topic, partition, producer, epoch, _, start, ..] => Some([topic, partition, producer, epoch, start].map(str::to_owned)),
            _ => None,
        })
        .collect()
}

/// A private broker named after `name`, without the controlled shutdown (see above).
pub fn without_controlled_shutdown(name: &str) -> PrivateBroker {
    let mut broker = PrivateBroker::new(name);
    broker.extra_properties = "controlled.shutdown.enable=false".into();
    broker
}

#[test]
fn a_producer_is_aborted_on_its_outputs_first_and_only_when_both_listings_agree() {
    let row = |topic: &str, partition: &str, producer: &str| [topic, partition, producer, "0", "7"].map(str::to_owned);
    let (changelog, offsets, output) = (row("p.orders.changelog", "3", "10"), row("__consumer_offsets", "23", "10"), row("p.shop.orders", "3", "10"));
    let (seen_once, other) = (row("p.shop.payments", "1", "11"), row("p.payments.changelog", "1", "11"));
    let first = [changelog.clone(), offsets.clone(), output.clone(), other.clone()];
    let second = [changelog.clone(), offsets.clone(), output.clone(), other.clone(), seen_once];
    let order: Vec<_> = in_abort_order(&first, &second).into_iter().cloned().collect();
    // Producer 11 has a row only the second listing shows: it waits for the next round.
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[0], output, "the output first: {order:?}");
    assert!(order[1..].contains(&changelog) && order[1..].contains(&offsets), "{order:?}");
}
