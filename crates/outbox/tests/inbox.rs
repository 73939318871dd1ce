//! The inbox against the real broker and the shared PostgreSQL: events delivered again
//! (the same event published twice, and the whole topic consumed again by a consumer
//! whose offsets were never committed for it) change the database once.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use herald_bus::{Consumer, Envelope, HandlerError, Metadata, Publisher, PublisherOptions, Topic};
use herald_outbox::inbox::{pg_error, Inbox, InboxHandler};
use tokio_util::sync::CancellationToken;

/// Adds each event's n to its account's total, and counts its own calls.
struct Totals {
    table: String,
    calls: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl InboxHandler<Steps> for Totals {
    async fn handle(&self, tx: &tokio_postgres::Transaction<'_>, event: &Envelope<Steps>) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let Steps::Stepped(s) = &event.event;
        tx.execute(
            &format!(
                "INSERT INTO {t} (account, total, events) VALUES ($1, $2, 1)
                 ON CONFLICT (account) DO UPDATE SET total = {t}.total + $2, events = {t}.events + 1",
                t = self.table
            ),
            &[&s.account, &s.n],
        )
        .await
        .map_err(pg_error)?;
        Ok(())
    }
}

async fn run_until(kafka: &herald_bus::KafkaConfig, group: &str, topic: &Topic<Steps>, inbox: &Inbox, handler: Totals, done: impl Fn() -> futures::future::BoxFuture<'static, bool>) {
    let consumer = Consumer::builder(kafka.clone(), group).subscribe(topic, inbox.handler(handler)).build().await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(60), "the consumer handled what it should", done).await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// An inbox made before the program installs its metrics recorder still counts on
/// `/metrics`. (Before, it took its counters when made: an outside probe saw no
/// `herald_inbox_*` at all.) The only test of this binary that installs the process's
/// recorder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inbox_made_before_the_metrics_recorder_counts_on_it() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.inbox.metrics", 1).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let client = Arc::new(herald_outbox::connect(&config).await.unwrap());
    let inbox_table = table_name("t_inbox_m");
    let totals = format!("{inbox_table}_totals");
    client.batch_execute(&format!("CREATE TABLE {totals} (account text PRIMARY KEY, total bigint NOT NULL, events bigint NOT NULL)")).await.unwrap();
    let consumer_name = herald_testkit::unique("counted");
    let inbox = Inbox::new(config.clone(), &inbox_table, consumer_name.clone(), 2).unwrap();
    inbox.ensure_schema().await.unwrap();
    let metrics = herald_ops::install_metrics().unwrap();

    let publisher = Publisher::new(&kafka, PublisherOptions::new("/test/inbox")).unwrap();
    let first = Stepped { account: "a".into(), n: 1 };
    let meta = Metadata::new(<Stepped as herald_bus::Event>::TYPE, "/test/inbox", "a");
    publisher.publish_with(&topic, &first, meta.clone()).await.unwrap();
    publisher.publish_with(&topic, &first, meta).await.unwrap();
    publisher.publish(&topic, &Stepped { account: "a".into(), n: 2 }).await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let handled = move || {
        let calls = counted.clone();
        Box::pin(async move { calls.load(Ordering::SeqCst) >= 2 }) as futures::future::BoxFuture<'static, bool>
    };
    run_until(&kafka, &herald_testkit::unique("outbox.inbox.m"), &topic, &inbox, Totals { table: totals.clone(), calls }, handled).await;
    let page = metrics.render();
    let value = |name: &str| {
        let label = format!("consumer=\"{consumer_name}\"");
        page.lines().find(|l| l.starts_with(name) && l.contains(&label)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!((value("herald_inbox_applied_total"), value("herald_inbox_duplicates_total")), (Some(2.0), Some(1.0)), "{page}");
    client.batch_execute(&format!("DROP TABLE {totals}; DROP TABLE {inbox_table}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_events_change_the_database_once() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.inbox", 1).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let client = Arc::new(herald_outbox::connect(&config).await.unwrap());
    let inbox_table = table_name("t_inbox");
    let totals = format!("{inbox_table}_totals");
    client.batch_execute(&format!("CREATE TABLE {totals} (account text PRIMARY KEY, total bigint NOT NULL, events bigint NOT NULL)")).await.unwrap();
    let inbox = Inbox::new(config.clone(), &inbox_table, "totals", 4).unwrap();
    inbox.ensure_schema().await.unwrap();

    // 200 events, and 40 of them published a second time with the same id.
    let publisher = Publisher::new(&kafka, PublisherOptions::new("/test/inbox")).unwrap();
    let mut expected = std::collections::BTreeMap::<String, (i64, i64)>::new();
    let mut sent = Vec::new();
    for i in 0..200i64 {
        let event = Stepped { account: format!("acct-{}", i % 10), n: i + 1 };
        let meta = Metadata::new(<Stepped as herald_bus::Event>::TYPE, "/test/inbox", event.account.clone());
        publisher.publish_with(&topic, &event, meta.clone()).await.unwrap();
        let entry = expected.entry(event.account.clone()).or_default();
        entry.0 += event.n;
        entry.1 += 1;
        sent.push((event, meta));
    }
    for (event, meta) in sent.iter().step_by(5) {
        publisher.publish_with(&topic, event, meta.clone()).await.unwrap();
    }

    let calls = Arc::new(AtomicU64::new(0));
    let handled = |n: u64| {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            Box::pin(async move { calls.load(Ordering::SeqCst) >= n }) as futures::future::BoxFuture<'static, bool>
        }
    };
    // The first consumer: the duplicates on the topic are skipped.
    let first_group = herald_testkit::unique("outbox.inbox.a");
    run_until(&kafka, &first_group, &topic, &inbox, Totals { table: totals.clone(), calls: calls.clone() }, handled(200)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 200, "each distinct event handled once");
    for (_, meta) in &sent {
        assert!(inbox.contains(meta.id).await.unwrap());
    }

    // Everything again, as after a crash before any offset was committed: a member of a
    // group with no committed offsets reads the topic from the start. A new event after
    // the old ones says when it is through (one partition: in order).
    let last = Stepped { account: "acct-last".into(), n: 1 };
    publisher.publish(&topic, &last).await.unwrap();
    publisher.flush(Duration::from_secs(10)).await.unwrap();
    let second_group = herald_testkit::unique("outbox.inbox.b");
    run_until(&kafka, &second_group, &topic, &inbox, Totals { table: totals.clone(), calls: calls.clone() }, handled(201)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 201, "only the new event was handled again");

    expected.insert("acct-last".into(), (1, 1));
    let rows = client.query(&format!("SELECT account, total, events FROM {totals} ORDER BY account"), &[]).await.unwrap();
    let actual: std::collections::BTreeMap<String, (i64, i64)> = rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    assert_eq!(actual, expected, "each event's effect exactly once");
    client.batch_execute(&format!("DROP TABLE {totals}; DROP TABLE {inbox_table}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_under_the_inbox_changes_nothing_twice_and_loses_nothing() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.inboxkill", 3).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let pg = herald_testkit::PrivatePostgres::new("inbox-pg");
    pg.start().await;
    let config = herald_outbox::config(&pg.url()).unwrap();
    let totals = "totals".to_owned();
    herald_outbox::connect(&config)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE totals (account text PRIMARY KEY, total bigint NOT NULL, events bigint NOT NULL)")
        .await
        .unwrap();
    let inbox = Inbox::new(config.clone(), "inbox", "totals", 4).unwrap();
    inbox.ensure_schema().await.unwrap();

    let publisher = Publisher::new(&kafka, PublisherOptions::new("/test/inbox")).unwrap();
    let events: Vec<Stepped> = (0..3000i64).map(|i| Stepped { account: format!("acct-{}", i % 20), n: i + 1 }).collect();
    for result in publisher.publish_all(&topic, &events).await {
        result.unwrap();
    }
    let mut expected = std::collections::BTreeMap::<String, (i64, i64)>::new();
    for e in &events {
        let entry = expected.entry(e.account.clone()).or_default();
        entry.0 += e.n;
        entry.1 += 1;
    }

    let calls = Arc::new(AtomicU64::new(0));
    let consumer = Consumer::builder(kafka.clone(), herald_testkit::unique("outbox.inboxkill"))
        .subscribe(&topic, inbox.handler(Totals { table: totals.clone(), calls: calls.clone() }))
        .build()
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer.run(stop.clone().cancelled_owned()));
    for at in [500u64, 1500] {
        herald_testkit::wait_until(Duration::from_secs(120), &format!("{at} events handled"), || {
            let calls = calls.clone();
            async move { calls.load(Ordering::SeqCst) >= at }
        })
        .await;
        pg.kill().await;
        pg.start().await;
    }
    herald_testkit::wait_until(Duration::from_secs(120), "every event recorded in the inbox", || {
        let config = config.clone();
        async move {
            let Ok(client) = herald_outbox::connect(&config).await else { return false };
            client.query_one("SELECT count(*) FROM inbox", &[]).await.is_ok_and(|r| r.get::<_, i64>(0) == 3000)
        }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let client = herald_outbox::connect(&config).await.unwrap();
    let rows = client.query("SELECT account, total, events FROM totals ORDER BY account", &[]).await.unwrap();
    let actual: std::collections::BTreeMap<String, (i64, i64)> = rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    assert_eq!(actual, expected, "each event applied exactly once across two server crashes");
    eprintln!("inbox under PostgreSQL kills: 3000 events, handler called {} times", calls.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_starting_together_all_create_the_inbox_schema() {
    // CREATE TABLE IF NOT EXISTS run by several sessions at once can fail on a unique
    // violation in pg_type; ensure_schema must serialize itself. Several rounds, each on a
    // new table, each with services starting at once.
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let admin = herald_outbox::connect(&config).await.unwrap();
    for round in 0..5 {
        let table = table_name("t_inbox_schema");
        let inboxes: Vec<Inbox> = (0..8).map(|i| Inbox::new(config.clone(), &table, format!("service-{i}"), 1).unwrap()).collect();
        let start = Arc::new(tokio::sync::Barrier::new(inboxes.len()));
        let tasks: Vec<_> = inboxes
            .into_iter()
            .map(|inbox| {
                let start = start.clone();
                tokio::spawn(async move {
                    // Connect before the barrier, so the CREATEs start together (this
                    // query fails, there is no table yet; its connection stays pooled).
                    let _ = inbox.contains(uuid::Uuid::nil()).await;
                    start.wait().await;
                    inbox.ensure_schema().await.map(|()| inbox)
                })
            })
            .collect();
        for (i, result) in futures::future::join_all(tasks).await.into_iter().enumerate() {
            let inbox = result.unwrap().unwrap_or_else(|e| panic!("round {round}: service {i}: ensure_schema failed: {e:?}"));
            assert!(!inbox.contains(uuid::Uuid::nil()).await.unwrap(), "the table is there and empty");
        }
        admin.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
    }
}
