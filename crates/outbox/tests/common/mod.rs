//! What the outbox tests share: a test event, a service that commits state and events
//! together, and an independent reader of the topic.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use herald_bus::{Event, KafkaConfig, Topic};
use herald_outbox::{Outbox, OutboxTable};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// The n-th event of an account (n from 1, contiguous per account).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stepped {
    pub account: String,
    pub n: i64,
}

pub const SCHEMA: &str = r#"{"type":"record","name":"Stepped","namespace":"herald.test.outbox","fields":[{"name":"account","type":"string"},{"name":"n","type":"long"}]}"#;

impl Event for Stepped {
    const TYPE: &'static str = "herald.test.outbox.Stepped";
    const SCHEMA: &'static str = SCHEMA;
    fn aggregate_id(&self) -> &str {
        &self.account
    }
}

herald_bus::family! {
    /// The test topic's events.
    #[derive(Debug, Clone)]
    pub enum Steps { Stepped(Stepped) }
}

/// A unique lower-case table name.
pub fn table_name(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The service's own state table: the last n per account.
pub async fn create_state(client: &tokio_postgres::Client, table: &str) {
    client.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {table}_state (account text PRIMARY KEY, n bigint NOT NULL)")).await.unwrap();
}

/// One step of `account` in one transaction: state n+1 and its event, together. Returns
/// the new n on commit. An error leaves the outcome to be read from the state.
pub async fn step(client: &mut tokio_postgres::Client, outbox: &Outbox, topic: &Topic<Steps>, account: &str) -> Result<i64, tokio_postgres::Error> {
    let table = outbox.table().name().to_owned();
    let tx = client.transaction().await?;
    let n: i64 = tx
        .query_one(
            &format!("INSERT INTO {table}_state (account, n) VALUES ($1, 1) ON CONFLICT (account) DO UPDATE SET n = {table}_state.n + 1 RETURNING n"),
            &[&account],
        )
        .await?
        .get(0);
    match outbox.publish(&tx, topic, &Stepped { account: account.to_owned(), n }).await {
        Ok(_) => {}
        Err(herald_outbox::OutboxError::Postgres(e)) => return Err(e),
        Err(e) => panic!("publish: {e}"),
    }
    tx.commit().await?;
    Ok(n)
}

/// The committed state: n per account.
pub async fn state(client: &tokio_postgres::Client, table: &str) -> BTreeMap<String, i64> {
    client.query(&format!("SELECT account, n FROM {table}_state"), &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Rows still in the outbox.
pub async fn pending(client: &tokio_postgres::Client, table: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

/// One record as an independent reader sees it: decoded with apache-avro from the bytes
/// after the single-object header, the id from `ce_id`.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: String,
    pub key: String,
    pub account: String,
    pub n: i64,
    pub partition: i32,
    pub offset: i64,
}

/// Reads the whole topic (every partition to its end), read_committed.
pub fn read_topic(config: &KafkaConfig, topic: &str) -> Vec<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .set("group.id", herald_testkit::unique("outbox.reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10)).unwrap();
        ends.insert(*p, high);
        tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let schema = apache_avro::Schema::parse_str(SCHEMA).unwrap();
    let mut seen = Vec::new();
    let mut next: HashMap<i32, i64> = partitions.iter().map(|p| (*p, 0)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while next.iter().any(|(p, o)| *o < ends[p]) {
        assert!(std::time::Instant::now() < deadline, "topic not read to its end in time");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        next.insert(message.partition(), message.offset() + 1);
        let payload = message.payload().unwrap();
        assert_eq!(&payload[..2], &[0xC3, 0x01], "single-object encoding");
        let value = apache_avro::from_avro_datum(&schema, &mut &payload[10..], None).unwrap();
        let apache_avro::types::Value::Record(fields) = value else { panic!("a record") };
        let account = match &fields[0].1 {
            apache_avro::types::Value::String(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        let n = match &fields[1].1 {
            apache_avro::types::Value::Long(n) => *n,
            other => panic!("{other:?}"),
        };
        let headers = message.headers().unwrap();
        let header = |name: &str| headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(header("ce_type").as_deref(), Some(Stepped::TYPE));
        assert_eq!(header("ce_subject").as_deref(), Some(account.as_str()));
        assert_eq!(header("content-type").as_deref(), Some("application/avro"));
        seen.push(Seen {
            id: header("ce_id").unwrap(),
            key: String::from_utf8_lossy(message.key().unwrap()).into_owned(),
            account,
            n,
            partition: message.partition(),
            offset: message.offset(),
        });
    }
    seen.sort_by_key(|s| (s.partition, s.offset));
    seen
}

/// What the topic says against the committed state.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Records read.
    pub records: usize,
    /// Records whose id was seen before (the same event again).
    pub duplicates: usize,
    /// Records whose n is lower than the previous record of the same account (a resend
    /// after a crash repeats a suffix); zero when no relay crashed.
    pub out_of_order_repeats: usize,
}

/// Checks the topic against the state: every committed step of every account is there,
/// first seen in order 1..=n, each (account, n) under exactly one event id, nothing that
/// was not committed, every key the account. Returns the counts.
pub fn check(seen: &[Seen], state: &BTreeMap<String, i64>) -> Verdict {
    let mut verdict = Verdict { records: seen.len(), ..Verdict::default() };
    let mut ids: HashMap<&str, (&str, i64)> = HashMap::new();
    let mut ids_of_step: HashMap<(&str, i64), &str> = HashMap::new();
    let mut first_order: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut last_n: HashMap<&str, i64> = HashMap::new();
    for s in seen {
        assert_eq!(s.key, s.account, "the key is the aggregate id");
        if let Some(previous) = ids_of_step.insert((&s.account, s.n), &s.id) {
            assert_eq!(previous, s.id, "step {} of {} published under two ids", s.n, s.account);
        }
        if let Some(known) = ids.insert(&s.id, (&s.account, s.n)) {
            assert_eq!(known, (s.account.as_str(), s.n), "one id, two events");
            verdict.duplicates += 1;
        } else {
            first_order.entry(&s.account).or_default().push(s.n);
        }
        let last = last_n.entry(&s.account).or_insert(0);
        if s.n < *last {
            verdict.out_of_order_repeats += 1;
        }
        *last = s.n;
    }
    for (account, n) in state {
        let order = first_order.get(account.as_str()).cloned().unwrap_or_default();
        let expected: Vec<i64> = (1..=*n).collect();
        assert_eq!(order, expected, "account {account}: events first seen in this order, committed 1..={n}");
    }
    assert_eq!(first_order.len(), state.len(), "no events of accounts that never committed");
    verdict
}

/// A table and outbox for a test.
pub async fn outbox(client: &mut tokio_postgres::Client, prefix: &str, buckets: u32) -> Outbox {
    assert!(!client.is_closed(), "no PostgreSQL: run `bash scripts/postgres start` (or set HERALD_TEST_POSTGRES_URL)");
    let table = OutboxTable::new(&table_name(prefix)).unwrap().buckets(buckets).unwrap();
    table.ensure_schema(client).await.unwrap();
    create_state(client, table.name()).await;
    Outbox::new(table, "/test/outbox")
}

/// The shared PostgreSQL: `HERALD_TEST_POSTGRES_URL` (what `scripts/test` exports), else
/// `scripts/postgres`'s default address. Tests use uniquely named tables in it and drop them.
pub fn shared_postgres() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://herald@127.0.0.1:55432/herald".to_owned())
}

/// A new, empty database on the shared server, for tests that need several; returns its
/// name and URL. Drop it with [`drop_database`].
pub async fn fresh_database(admin: &tokio_postgres::Client, prefix: &str) -> (String, String) {
    let name = table_name(prefix);
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let shared = shared_postgres();
    let base = shared.rsplit_once('/').map_or(shared.as_str(), |(b, _)| b);
    (name.clone(), format!("{base}/{name}"))
}

/// Drops a database made by [`fresh_database`], closing what is still connected to it.
pub async fn drop_database(admin: &tokio_postgres::Client, name: &str) {
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
}

/// Drops a test's outbox table, its companions and its state table.
pub async fn drop_outbox(client: &tokio_postgres::Client, table: &str) {
    client.batch_execute(&format!("DROP TABLE IF EXISTS {table}, {table}_buckets, {table}_settings, {table}_state")).await.unwrap();
}

/// Writers: `tasks` tasks, each stepping its own `accounts` accounts at random until
/// `stop`, reconnecting after errors (an error's outcome is read back from the state by
/// the check, which compares with the committed state). Returns the steps committed for
/// sure.
pub fn spawn_writers(url: &str, outbox: &Outbox, topic: &Topic<Steps>, tasks: usize, accounts: usize, stop: tokio_util::sync::CancellationToken) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..tasks)
        .map(|w| {
            let (url, outbox, topic, stop) = (url.to_owned(), outbox.clone(), topic.clone(), stop.clone());
            tokio::spawn(async move {
                let config = herald_outbox::config(&url).unwrap();
                let mut client = None;
                let mut committed = 0u64;
                let mut i = 0usize;
                while !stop.is_cancelled() {
                    let c = match client.as_mut() {
                        Some(c) => c,
                        None => match herald_outbox::connect(&config).await {
                            Ok(c) => client.insert(c),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    i += 1;
                    let account = format!("acct-{w}-{}", (i * 7919) % accounts);
                    match step(c, &outbox, &topic, &account).await {
                        Ok(_) => committed += 1,
                        Err(e) => {
                            if c.is_closed() || herald_outbox::is_transient(&e) {
                                client = None;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            } else {
                                panic!("step failed: {e}");
                            }
                        }
                    }
                }
                committed
            })
        })
        .collect()
}
