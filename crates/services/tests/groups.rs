//! Consumer group lag against the real broker: a group that committed part of a topic.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;
use std::time::Duration;

use herald_bus::admin::{create_topics, TopicSpec};
use herald_services::groups::Inspector;
use herald_testkit::{kafka, unique};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

#[tokio::test]
async fn a_group_that_committed_part_of_a_topic_shows_its_lag_in_records_and_seconds() {
    let config = kafka().await;
    let topic = unique("t.lag");
    let group = unique("g.lag");
    create_topics(&config, &[TopicSpec::new(&topic).partitions(2)]).await.unwrap();
    let producer: FutureProducer = config.client_config(&[("acks", "all")]).create().unwrap();
    let written = chrono::Utc::now().timestamp_millis();
    for i in 0..10 {
        let partition = i % 2;
        let record = FutureRecord::<str, str>::to(&topic).partition(partition).key("k").payload("v").timestamp(written - 60_000 + i64::from(i));
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    // The group committed offset 2 on partition 0 (3 of its 5 records left) and the end of
    // partition 1.
    let committer: BaseConsumer = config.client_config(&[("group.id", group.as_str()), ("enable.auto.commit", "false")]).create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(2)).unwrap();
    offsets.add_partition_offset(&topic, 1, Offset::Offset(5)).unwrap();
    committer.commit(&offsets, CommitMode::Sync).unwrap();
    drop(committer);

    let (config2, group2, unknown) = (config.clone(), group.clone(), unique("g.none"));
    let lags = tokio::task::spawn_blocking(move || {
        let inspector = Inspector::new(&config2, Duration::from_secs(10)).unwrap();
        inspector.inspect(&BTreeSet::from([group2, unknown])).unwrap()
    })
    .await
    .unwrap();
    let lag = lags.iter().find(|l| l.group == group).unwrap();
    assert_eq!(lag.state, "Empty", "{lag:?}");
    assert_eq!(lag.members, 0);
    assert_eq!(lag.lag_records, 3, "{lag:?}");
    let p0 = lag.partitions.iter().find(|p| p.partition == 0).unwrap();
    assert_eq!((p0.committed, p0.high_watermark, p0.lag_records), (Some(2), 5, 3));
    // The record at offset 2 was written a minute ago (its timestamp).
    assert!((59.0..120.0).contains(&p0.lag_seconds), "{p0:?}");
    let p1 = lag.partitions.iter().find(|p| p.partition == 1).unwrap();
    assert_eq!((p1.lag_records, p1.lag_seconds), (0, 0.0));
    assert!((59.0..120.0).contains(&lag.lag_seconds));
    let none = lags.iter().find(|l| l.group != group).unwrap();
    assert!(none.partitions.is_empty() && none.members == 0, "{none:?}");
}

#[tokio::test]
async fn a_running_group_shows_its_members_and_their_assigned_partitions() {
    let config = kafka().await;
    let topic = unique("t.lag");
    let group = unique("g.run");
    create_topics(&config, &[TopicSpec::new(&topic).partitions(3)]).await.unwrap();
    let (config2, topic2, group2) = (config.clone(), topic.clone(), group.clone());
    let lag = tokio::task::spawn_blocking(move || {
        let member: BaseConsumer = config2.client_config(&[("group.id", group2.as_str())]).create().unwrap();
        member.subscribe(&[&topic2]).unwrap();
        // Poll until the group gave it the three partitions (a deadline, not a sleep).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while member.assignment().map_or(0, |a| a.count()) < 3 {
            assert!(std::time::Instant::now() < deadline, "no assignment within 60 s");
            let _ = member.poll(Duration::from_millis(100));
        }
        let inspector = Inspector::new(&config2, Duration::from_secs(10)).unwrap();
        let lag = inspector.inspect(&BTreeSet::from([group2])).unwrap().remove(0);
        drop(member);
        lag
    })
    .await
    .unwrap();
    assert_eq!((lag.state.as_str(), lag.members), ("Stable", 1), "{lag:?}");
    let expected: Vec<String> = (0..3).map(|p| format!("{topic}-{p}")).collect();
    assert_eq!(lag.assigned, expected);
    assert_eq!(lag.lag_records, 0, "an empty topic has no lag");
    assert_eq!(lag.partitions.len(), 3, "assigned partitions are listed without commits");
}

/// Commits `offset` on partition 0 of `topic` for `group`.
fn commit(config: &herald_bus::KafkaConfig, group: &str, topic: &str, offset: i64) {
    let committer: BaseConsumer = config.client_config(&[("group.id", group), ("enable.auto.commit", "false")]).create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(topic, 0, Offset::Offset(offset)).unwrap();
    committer.commit(&offsets, CommitMode::Sync).unwrap();
}

#[tokio::test]
async fn a_later_inspection_goes_on_from_the_last_and_sees_new_commits_and_other_groups() {
    let config = kafka().await;
    let topic = unique("t.lag");
    create_topics(&config, &[TopicSpec::new(&topic).partitions(1)]).await.unwrap();
    let producer: FutureProducer = config.client_config(&[("acks", "all")]).create().unwrap();
    for _ in 0..6 {
        producer.send(FutureRecord::<str, str>::to(&topic).partition(0).key("k").payload("v"), Duration::from_secs(10)).await.unwrap();
    }
    let partitions = herald_bus::admin::partition_count(&config, herald_services::groups::OFFSETS_TOPIC).await.unwrap().unwrap_or(50) as i32;
    let first = unique("g.first");
    // Another group whose commits share the first one's partition of the offsets topic.
    let same = (0..)
        .map(|i| format!("{first}.{i}"))
        .find(|g| herald_services::groups::offsets_partition(g, partitions) == herald_services::groups::offsets_partition(&first, partitions))
        .unwrap();
    let (config2, topic2) = (config.clone(), topic.clone());
    let (once, twice) = tokio::task::spawn_blocking(move || {
        let end = || {
            let watcher: BaseConsumer = config2.client_config(&[("group.id", "watermarks")]).create().unwrap();
            watcher.fetch_watermarks(herald_services::groups::OFFSETS_TOPIC, herald_services::groups::offsets_partition(&first, partitions), Duration::from_secs(10)).unwrap().1
        };
        commit(&config2, &first, &topic2, 2);
        // The first inspection reads at least to here (where the first commit ends).
        let before = end();
        let inspector = Inspector::new(&config2, Duration::from_secs(10)).unwrap();
        let once = inspector.inspect(&BTreeSet::from([first.clone()])).unwrap();
        let read_once = inspector.offsets_read();
        commit(&config2, &first, &topic2, 4);
        commit(&config2, &same, &topic2, 1);
        let twice = inspector.inspect(&BTreeSet::from([first.clone(), same])).unwrap();
        let appended = end() - before;
        let read_twice = inspector.offsets_read() - read_once;
        assert!(read_once >= 1 && read_twice >= 2, "each inspection read the commits ({read_once}, {read_twice})");
        assert!(read_twice as i64 <= appended, "the second inspection read {read_twice} records: at most the {appended} appended since the first, not the partition again");
        (once, twice)
    })
    .await
    .unwrap();
    let lag = |lags: &[herald_services::groups::GroupLag], i: usize| lags[i].partitions.iter().map(|p| (p.committed, p.lag_records)).collect::<Vec<_>>();
    assert_eq!(lag(&once, 0), [(Some(2), 4)], "{once:?}");
    // BTreeSet order: the first group, then its `.N` sibling.
    assert_eq!(lag(&twice, 0), [(Some(4), 2)], "the commit made since the last inspection: {twice:?}");
    assert_eq!(lag(&twice, 1), [(Some(1), 5)], "a group asked for the first time, in a partition read before: {twice:?}");
}

/// After a transactional producer's last record, the partition ends with its commit
/// marker, which a `read_committed` consumer never returns: a group that read everything
/// commits the marker's offset, one short of the end. That is no lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_read_a_transactional_topic_to_its_end_has_no_lag() {
    let config = kafka().await;
    let topic = unique("t.lag-txn");
    let (done, behind) = (unique("g.done"), unique("g.behind"));
    create_topics(&config, &[TopicSpec::new(&topic).partitions(1)]).await.unwrap();
    let producer: FutureProducer = config.client_config(&[("transactional.id", unique("txn").as_str())]).create().unwrap();
    let topic2 = topic.clone();
    let producer = tokio::task::spawn_blocking(move || {
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        producer.begin_transaction().unwrap();
        producer
    })
    .await
    .unwrap();
    for _ in 0..3 {
        producer.send(FutureRecord::<str, str>::to(&topic2).partition(0).key("k").payload("v"), Duration::from_secs(10)).await.unwrap();
    }
    let producer = tokio::task::spawn_blocking(move || {
        producer.commit_transaction(Duration::from_secs(30)).unwrap();
        producer
    })
    .await
    .unwrap();
    drop(producer);
    // An inspector that skipped the offsets topic's history before the groups committed
    // (as the demo's driver does for its run's new groups) sees their commits all the same.
    let config1 = config.clone();
    let early = tokio::task::spawn_blocking(move || {
        let inspector = Inspector::new(&config1, Duration::from_secs(10)).unwrap();
        inspector.skip_history().unwrap();
        inspector
    })
    .await
    .unwrap();
    // Records at 0, 1, 2; the marker at 3; the end at 4.
    for (group, offset) in [(&done, 3), (&behind, 1)] {
        let committer: BaseConsumer = config.client_config(&[("group.id", group.as_str()), ("enable.auto.commit", "false")]).create().unwrap();
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&topic, 0, Offset::Offset(offset)).unwrap();
        committer.commit(&offsets, CommitMode::Sync).unwrap();
    }
    let (config2, groups) = (config.clone(), BTreeSet::from([done.clone(), behind.clone()]));
    let (lags, early_lags) = tokio::task::spawn_blocking(move || (Inspector::new(&config2, Duration::from_secs(10)).unwrap().inspect(&groups).unwrap(), early.inspect(&groups).unwrap())).await.unwrap();
    let counted = |lags: &[herald_services::groups::GroupLag]| lags.iter().map(|l| (l.group.clone(), l.partitions.iter().map(|p| (p.committed, p.lag_records)).collect::<Vec<_>>())).collect::<Vec<_>>();
    assert_eq!(counted(&early_lags), counted(&lags), "skipping the history loses no later commit");
    let of = |group: &str| lags.iter().find(|l| l.group == group).unwrap().partitions[0].clone();
    let read_all = of(&done);
    assert_eq!((read_all.committed, read_all.high_watermark, read_all.lag_records), (Some(3), 4, 0), "{read_all:?}");
    let two_left = of(&behind);
    assert_eq!((two_left.committed, two_left.lag_records), (Some(1), 3), "records 1 and 2, and the marker: {two_left:?}");
}
