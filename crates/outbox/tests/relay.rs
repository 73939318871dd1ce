//! The relay against the real broker and the shared PostgreSQL: committed rows reach the
//! topic in order per aggregate with their ids, rolled-back ones never; several relays
//! share a table without interleaving an aggregate.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use herald_bus::Topic;
use herald_outbox::relay::{Relay, RelayOptions};
use tokio_util::sync::CancellationToken;

fn options(instance: &str) -> RelayOptions {
    RelayOptions {
        instance: instance.to_owned(),
        batch_size: 50,
        poll_interval: Duration::from_millis(500),
        rebalance_interval: Duration::from_millis(300),
        delivery_timeout: Duration::from_secs(5),
        takeover_delay: Duration::from_secs(6),
        ..RelayOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_rows_reach_the_topic_in_order_and_rolled_back_ones_never() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.relay", 4).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let url = shared_postgres();
    let config = herald_outbox::config(&url).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_relay", 8).await;
    let table = outbox.table().clone();

    // A rolled-back transaction's event never leaves.
    let tx = client.transaction().await.unwrap();
    let ghost = outbox.publish(&tx, &topic, &Stepped { account: "ghost".into(), n: 1 }).await.unwrap();
    tx.rollback().await.unwrap();
    // One committed by hand: its id is the one on the topic.
    let tx = client.transaction().await.unwrap();
    let first_id = outbox.publish(&tx, &topic, &Stepped { account: "acct-first".into(), n: 1 }).await.unwrap();
    tx.execute(&format!("INSERT INTO {}_state VALUES ('acct-first', 1)", table.name()), &[]).await.unwrap();
    tx.commit().await.unwrap();

    let relay = Relay::new(config.clone(), table.clone(), &kafka, options("solo")).unwrap();
    let health = relay.health();
    let stop_relay = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(stop_relay.clone().cancelled_owned()));

    let stop = CancellationToken::new();
    let writers = spawn_writers(&url, &outbox, &topic, 4, 10, stop.clone());
    herald_testkit::wait_until(Duration::from_secs(60), "writers committed 400 rows", || {
        let health = health.clone();
        async move { health.relayed() >= 400 }
    })
    .await;
    stop.cancel();
    let committed: u64 = futures::future::join_all(writers).await.into_iter().map(|r| r.unwrap()).sum();
    herald_testkit::wait_until(Duration::from_secs(30), "the outbox is empty", || {
        let client = &client;
        let name = table.name().to_owned();
        async move { pending(client, &name).await == 0 }
    })
    .await;
    assert!(health.is_healthy(), "{:?}", health.last_error());
    stop_relay.cancel();
    relay_task.await.unwrap().unwrap();

    let seen = read_topic(&kafka, &topic_name);
    let state = state(&client, table.name()).await;
    let verdict = check(&seen, &state);
    assert_eq!(verdict.records as u64, committed + 1, "every committed row once: {verdict:?}");
    assert_eq!((verdict.duplicates, verdict.out_of_order_repeats), (0, 0));
    assert!(seen.iter().all(|s| s.id != ghost.to_string()), "the rolled-back event was relayed");
    assert_eq!(seen.iter().find(|s| s.account == "acct-first").map(|s| s.id.clone()), Some(first_id.to_string()), "the id fixed at insert time");
    // Per aggregate, one partition.
    let mut partition_of = std::collections::HashMap::new();
    for s in &seen {
        assert_eq!(*partition_of.entry(s.account.clone()).or_insert(s.partition), s.partition, "{} spread over partitions", s.account);
    }
    drop_outbox(&client, table.name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_share_the_buckets_and_never_interleave_an_aggregate() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.shared", 4).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let url = shared_postgres();
    let config = herald_outbox::config(&url).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_shared", 12).await;
    let table = outbox.table().clone();

    let start = |name: &str| {
        let relay = Relay::new(config.clone(), table.clone(), &kafka, options(name)).unwrap();
        let health = relay.health();
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
        (health, stop, task)
    };
    let stop_writers = CancellationToken::new();
    let writers = spawn_writers(&url, &outbox, &topic, 4, 25, stop_writers.clone());
    let (a_health, a_stop, a_task) = start("a");
    let (b_health, b_stop, b_task) = start("b");
    herald_testkit::wait_until(Duration::from_secs(30), "two relays split the 12 buckets", || {
        let (a, b) = (a_health.clone(), b_health.clone());
        async move { a.owned_buckets() == 6 && b.owned_buckets() == 6 }
    })
    .await;
    // A third joins: each gives up buckets to it.
    let (c_health, c_stop, c_task) = start("c");
    herald_testkit::wait_until(Duration::from_secs(30), "three relays split the buckets", || {
        let (a, b, c) = (a_health.clone(), b_health.clone(), c_health.clone());
        async move { a.owned_buckets() == 4 && b.owned_buckets() == 4 && c.owned_buckets() == 4 }
    })
    .await;
    herald_testkit::wait_until(Duration::from_secs(30), "every relay relayed", || {
        let (a, b, c) = (a_health.clone(), b_health.clone(), c_health.clone());
        async move { a.relayed() > 0 && b.relayed() > 0 && c.relayed() > 0 }
    })
    .await;
    // One leaves in order: the others take its buckets at once (released, no delay).
    a_stop.cancel();
    a_task.await.unwrap().unwrap();
    let before = (b_health.relayed(), c_health.relayed());
    herald_testkit::wait_until(Duration::from_secs(5), "two relays took over the 12 buckets without a takeover delay", || {
        let (b, c) = (b_health.clone(), c_health.clone());
        async move { b.owned_buckets() == 6 && c.owned_buckets() == 6 }
    })
    .await;
    herald_testkit::wait_until(Duration::from_secs(30), "the remaining relays go on", || {
        let (b, c) = (b_health.clone(), c_health.clone());
        async move { b.relayed() > before.0 && c.relayed() > before.1 }
    })
    .await;
    stop_writers.cancel();
    let committed: u64 = futures::future::join_all(writers).await.into_iter().map(|r| r.unwrap()).sum();
    herald_testkit::wait_until(Duration::from_secs(30), "the outbox is empty", || {
        let client = &client;
        let name = table.name().to_owned();
        async move { pending(client, &name).await == 0 }
    })
    .await;
    b_stop.cancel();
    c_stop.cancel();
    b_task.await.unwrap().unwrap();
    c_task.await.unwrap().unwrap();

    let seen = read_topic(&kafka, &topic_name);
    let verdict = check(&seen, &state(&client, table.name()).await);
    assert_eq!(verdict.records as u64, committed, "{verdict:?}");
    // Orderly handovers: nothing sent twice, and no aggregate's events ever went backwards.
    assert_eq!((verdict.duplicates, verdict.out_of_order_repeats), (0, 0), "{verdict:?}");
    drop_outbox(&client, table.name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_wake_the_relay_also_after_its_session_was_cut() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.notify", 2).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let url = shared_postgres();
    let config = herald_outbox::config(&url).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_notify", 4).await;
    let table = outbox.table().clone();
    let instance = format!("notify-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Polling and rebalancing once a minute: only a notification can wake it in time.
    let options = RelayOptions {
        poll_interval: Duration::from_secs(60),
        rebalance_interval: Duration::from_secs(60),
        max_backoff: Duration::from_millis(200),
        ..options(&instance)
    };
    let relay = Relay::new(config.clone(), table.clone(), &kafka, options).unwrap();
    let health = relay.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(10), "the relay owns the buckets", || {
        let health = health.clone();
        async move { health.owned_buckets() == 4 }
    })
    .await;
    step(&mut client, &outbox, &topic, "acct-1").await.unwrap();
    herald_testkit::wait_until(Duration::from_secs(5), "relayed on the notification", || {
        let health = health.clone();
        async move { health.relayed() == 1 }
    })
    .await;
    assert_eq!(health.last_error(), None);
    // Cut the relay's session (as a network failure or a server restart would).
    let cut = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("herald-outbox-relay {instance}")],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 1, "the relay's session is found by its application_name");
    herald_testkit::wait_until(Duration::from_secs(10), "the relay noticed", || {
        let health = health.clone();
        async move { health.last_error().is_some() }
    })
    .await;
    herald_testkit::wait_until(Duration::from_secs(10), "the relay reconnected and took its buckets back", || {
        let health = health.clone();
        async move { health.owned_buckets() == 4 }
    })
    .await;
    step(&mut client, &outbox, &topic, "acct-1").await.unwrap();
    herald_testkit::wait_until(Duration::from_secs(5), "relayed on a notification after the reconnect", || {
        let health = health.clone();
        async move { health.relayed() == 2 }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let seen = read_topic(&kafka, &topic_name);
    let verdict = check(&seen, &state(&client, table.name()).await);
    assert_eq!((verdict.records, verdict.duplicates), (2, 0));
    drop_outbox(&client, table.name()).await;
}

/// One relay per PostgreSQL config, each on its own table named `name` (in other
/// databases or schemas of one server), with rows in every bucket: each relay owns every
/// bucket of its table and relays every row. Relays of other tables are not counted as
/// sharing this one.
async fn relays_of_same_named_tables_relay_everything(kafka: &herald_bus::KafkaConfig, configs: &[tokio_postgres::Config], name: &str) {
    let topic_name = herald_testkit::topic(kafka, "outbox.samename", 2).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let table = herald_outbox::OutboxTable::new(name).unwrap().buckets(8).unwrap();
    let outbox = herald_outbox::Outbox::new(table.clone(), "/test/outbox");
    let mut clients = Vec::new();
    let mut written = 0;
    for (i, config) in configs.iter().enumerate() {
        let mut client = herald_outbox::connect(config).await.unwrap();
        table.ensure_schema(&mut client).await.unwrap();
        create_state(&client, name).await;
        let mut filled = std::collections::HashSet::new();
        for a in 0.. {
            let account = format!("acct-{i}-{a}");
            step(&mut client, &outbox, &topic, &account).await.unwrap();
            written += 1;
            filled.insert(table.bucket_of(&account));
            if filled.len() == 8 && a >= 20 {
                break;
            }
        }
        clients.push(client);
    }
    let mut relays = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let relay = Relay::new(config.clone(), table.clone(), kafka, options(&format!("same-name-{i}"))).unwrap();
        let health = relay.health();
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
        relays.push((health, stop, task));
    }
    herald_testkit::wait_until(Duration::from_secs(30), "every table's outbox is empty", || {
        let clients = &clients;
        async move {
            for client in clients {
                if pending(client, name).await != 0 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    for (health, _, _) in &relays {
        assert_eq!(health.owned_buckets(), 8, "the only relay of its table owns every bucket");
    }
    let mut committed = std::collections::BTreeMap::new();
    for client in &clients {
        committed.extend(state(client, name).await);
    }
    for (_, stop, task) in relays {
        stop.cancel();
        task.await.unwrap().unwrap();
    }
    let seen = read_topic(kafka, &topic_name);
    let verdict = check(&seen, &committed);
    assert_eq!((verdict.records, verdict.duplicates), (written, 0), "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_in_two_databases_relay_every_row_of_their_own() {
    let kafka = herald_testkit::kafka().await;
    let admin = herald_outbox::connect(&herald_outbox::config(&shared_postgres()).unwrap()).await.unwrap();
    let name = table_name("t_twodb");
    let mut databases = Vec::new();
    let mut configs = Vec::new();
    for _ in 0..2 {
        let (database, url) = fresh_database(&admin, "herald_outbox").await;
        databases.push(database);
        configs.push(herald_outbox::config(&url).unwrap());
    }
    relays_of_same_named_tables_relay_everything(&kafka, &configs, &name).await;
    for database in databases {
        drop_database(&admin, &database).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_in_two_schemas_relay_every_row_of_their_own() {
    let kafka = herald_testkit::kafka().await;
    let url = shared_postgres();
    let admin = herald_outbox::connect(&herald_outbox::config(&url).unwrap()).await.unwrap();
    let name = table_name("t_twoschema");
    let schemas = [table_name("s_outbox"), table_name("s_outbox")];
    let mut configs = Vec::new();
    for schema in &schemas {
        admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let mut config = herald_outbox::config(&url).unwrap();
        config.options(format!("-c search_path={schema}"));
        configs.push(config);
    }
    relays_of_same_named_tables_relay_everything(&kafka, &configs, &name).await;
    for schema in &schemas {
        admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    }
}

/// A table whose every bucket was last held by a relay that vanished without releasing
/// it, with one row to relay; options with a 4 s takeover delay.
async fn after_a_vanished_relay(client: &mut tokio_postgres::Client, topic: &Topic<Steps>, prefix: &str) -> (herald_outbox::Outbox, RelayOptions) {
    let outbox = outbox(client, prefix, 4).await;
    let t = outbox.table().name().to_owned();
    client
        .execute(&format!("INSERT INTO {t}_buckets (bucket, owner, released) SELECT b, 'vanished', false FROM generate_series(0, 3) b"), &[])
        .await
        .unwrap();
    step(client, &outbox, topic, "acct-1").await.unwrap();
    let options = RelayOptions {
        delivery_timeout: Duration::from_secs(2),
        takeover_delay: Duration::from_secs(4),
        max_backoff: Duration::from_millis(200),
        ..options(&format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
    };
    (outbox, options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_whose_session_was_cut_still_waits_out_the_takeover_delay() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.recut", 2).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let (outbox, options) = after_a_vanished_relay(&mut client, &topic, "t_recut").await;
    let (instance, delay) = (options.instance.clone(), options.takeover_delay);
    let started = std::time::Instant::now();
    let relay = Relay::new(config.clone(), outbox.table().clone(), &kafka, options).unwrap();
    let health = relay.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(10), "the relay took the vanished relay's buckets, waiting out the delay", || {
        let health = health.clone();
        async move { health.owned_buckets() == 4 && health.waiting_buckets() == 4 }
    })
    .await;
    let (_, details) = herald_ops::HealthCheck::check(&*health);
    assert_eq!(details["waiting_buckets"], 4, "/health says why nothing is relayed: {details}");
    // Cut its session during the delay: it reconnects and finds itself the owner.
    let cut = client
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&format!("herald-outbox-relay {instance}")])
        .await
        .unwrap();
    assert_eq!(cut.len(), 1);
    herald_testkit::wait_until(Duration::from_secs(20), "the row is relayed", || {
        let health = health.clone();
        async move { health.relayed() == 1 }
    })
    .await;
    assert!(started.elapsed() >= delay, "relayed {:?} after the takeover, before the {delay:?} delay", started.elapsed());
    assert!(health.last_error().is_some(), "the session was cut");
    // Each bucket's delay ends on its own (they were taken one after another).
    herald_testkit::wait_until(Duration::from_secs(20), "no bucket waits past the delay", || {
        let health = health.clone();
        async move { health.waiting_buckets() == 0 }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    drop_outbox(&client, outbox.table().name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bucket_released_during_its_takeover_delay_still_waits_it_out() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.rerelease", 2).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let (outbox, options) = after_a_vanished_relay(&mut client, &topic, "t_rerelease").await;
    let delay = options.takeover_delay;
    let started = std::time::Instant::now();
    // The first taker leaves in order during the delay (its buckets marked released)...
    let first = Relay::new(config.clone(), outbox.table().clone(), &kafka, options.clone()).unwrap();
    let first_health = first.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(first.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(10), "the first relay took the vanished relay's buckets", || {
        let health = first_health.clone();
        async move { health.owned_buckets() == 4 }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(first_health.relayed(), 0);
    // ...and the next one must still wait for what the vanished relay may have in flight.
    let next = Relay::new(config.clone(), outbox.table().clone(), &kafka, RelayOptions { instance: format!("{}-next", options.instance), ..options }).unwrap();
    let health = next.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(next.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(20), "the row is relayed", || {
        let health = health.clone();
        async move { health.relayed() == 1 }
    })
    .await;
    assert!(started.elapsed() >= delay, "relayed {:?} after the takeover, before the {delay:?} delay", started.elapsed());
    stop.cancel();
    task.await.unwrap().unwrap();
    drop_outbox(&client, outbox.table().name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_schema_adds_ready_at_to_a_buckets_table_made_before_it() {
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let table = herald_outbox::OutboxTable::new(&table_name("t_upgrade")).unwrap();
    let t = table.name().to_owned();
    // The companion as earlier versions created it.
    client
        .batch_execute(&format!(
            "CREATE TABLE {t}_buckets (bucket integer PRIMARY KEY, owner text, released boolean NOT NULL DEFAULT true, since timestamptz NOT NULL DEFAULT now());
             INSERT INTO {t}_buckets (bucket, owner, released) VALUES (0, 'old', false)"
        ))
        .await
        .unwrap();
    table.ensure_schema(&mut client).await.unwrap();
    table.ensure_schema(&mut client).await.unwrap();
    let row = client.query_one(&format!("SELECT owner, ready_at FROM {t}_buckets WHERE bucket = 0"), &[]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("old"));
    assert_eq!(row.get::<_, Option<std::time::SystemTime>>(1), None);
    client.batch_execute(&format!("DROP TABLE IF EXISTS {t}, {t}_buckets, {t}_settings")).await.unwrap();
}

/// A row whose bucket is not one of the table's (written by hand, not by
/// `Outbox::publish`) would never be relayed: the table refuses it. Found by an outside
/// look: such rows stayed in the table for ever, with no log line and a healthy relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_outside_the_buckets_is_refused_by_the_table() {
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let table = herald_outbox::OutboxTable::new(&table_name("t_range")).unwrap().buckets(4).unwrap();
    let t = table.name().to_owned();
    table.ensure_schema(&mut client).await.unwrap();
    table.ensure_schema(&mut client).await.unwrap(); // the check is added once
    let insert = |bucket: i32| {
        let sql = format!(
            "INSERT INTO {t} (event_id, topic, aggregate, bucket, payload, header_names, header_values) VALUES (gen_random_uuid(), 't', 'a', {bucket}, '\\x00', '{{}}', '{{}}')"
        );
        let client = &client;
        async move { client.batch_execute(&sql).await }
    };
    for bad in [-1, 4, 99] {
        let refused = insert(bad).await.expect_err("out of range");
        let message = refused.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
        assert!(message.contains(&format!("{t}_bucket_range")), "bucket {bad}: {refused:?}");
    }
    insert(3).await.expect("in range");
    client.batch_execute(&format!("DROP TABLE IF EXISTS {t}, {t}_buckets, {t}_settings")).await.unwrap();
}

/// Adds a header of `bytes` bytes to the newest row of `table` (the record the relay sends
/// grows by it); returns that row's `seq`.
async fn pad_newest_row(client: &tokio_postgres::Client, table: &str, bytes: i32) -> i64 {
    client
        .query_one(
            &format!(
                "UPDATE {table} SET header_names = header_names || 'x-pad'::text, header_values = header_values || decode(repeat('78', $1), 'hex')
                 WHERE seq = (SELECT max(seq) FROM {table}) RETURNING seq"
            ),
            &[&bytes],
        )
        .await
        .unwrap()
        .get(0)
}

/// Takes the header [`pad_newest_row`] added off row `seq` again.
async fn unpad_row(client: &tokio_postgres::Client, table: &str, seq: i64) {
    client
        .execute(
            &format!(
                "UPDATE {table} SET header_names = header_names[1:array_length(header_names, 1) - 1],
                     header_values = header_values[1:array_length(header_values, 1) - 1]
                 WHERE seq = $1 AND header_names[array_length(header_names, 1)] = 'x-pad'"
            ),
            &[&seq],
        )
        .await
        .unwrap();
}

/// Rows of `account` still in the outbox.
async fn pending_of(client: &tokio_postgres::Client, table: &str, account: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {table} WHERE aggregate = $1"), &[&account]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_delivery_holds_back_the_later_rows_of_its_aggregate() {
    let kafka = herald_testkit::kafka().await;
    // The topic takes records of up to 2000 bytes; the relay's own limit is 1 000 000.
    let topic_name = herald_testkit::unique("outbox.refused");
    let spec = herald_bus::admin::TopicSpec::new(&topic_name).partitions(1).config("max.message.bytes", "2000");
    herald_bus::admin::create_topics(&kafka, &[spec]).await.unwrap();
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_refused", 4).await;
    let t = outbox.table().name().to_owned();
    // a:1 is too large for the topic, a:2 (after it) and b:1 are not.
    step(&mut client, &outbox, &topic, "acct-a").await.unwrap();
    let too_large = pad_newest_row(&client, &t, 4000).await;
    step(&mut client, &outbox, &topic, "acct-a").await.unwrap();
    step(&mut client, &outbox, &topic, "acct-b").await.unwrap();
    // One record per produce request, so a:1 is refused alone and a:2 can succeed.
    let relay_kafka = kafka.clone().set("batch.num.messages", "1");
    let options = RelayOptions { max_backoff: Duration::from_millis(300), ..options(&format!("refused-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])) };
    let relay = Relay::new(config.clone(), outbox.table().clone(), &relay_kafka, options).unwrap();
    let health = relay.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(20), "b:1 relayed and a:1 refused", || {
        let (health, client, t) = (health.clone(), &client, t.clone());
        async move { health.last_error().is_some_and(|e| e.contains(&format!("seq {too_large} "))) && pending_of(client, &t, "acct-b").await == 0 }
    })
    .await;
    assert_eq!(pending_of(&client, &t, "acct-a").await, 2, "a:2 must not be relayed while a:1 is not");
    assert_eq!(health.held_aggregates(), 1);
    assert!(!health.is_healthy());
    // Retried alone, and refused again: a:2 still waits.
    let failures = health.failures();
    herald_testkit::wait_until(Duration::from_secs(10), "a:1 retried and refused again", || {
        let health = health.clone();
        async move { health.failures() >= failures + 2 }
    })
    .await;
    assert_eq!(pending_of(&client, &t, "acct-a").await, 2);
    // The operator fixes the row: a:1 goes out, then a:2 (again, if it was written before).
    unpad_row(&client, &t, too_large).await;
    all_relayed_and_released(&client, &t, &health).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let seen = read_topic(&kafka, &topic_name);
    let a: Vec<i64> = seen.iter().filter(|s| s.account == "acct-a").map(|s| s.n).collect();
    let first_a1 = a.iter().position(|n| *n == 1).expect("a:1 on the topic");
    let last_a2 = a.iter().rposition(|n| *n == 2).expect("a:2 on the topic");
    assert!(first_a1 < last_a2, "a:2 relayed before a:1 and not again after it: {a:?}");
    assert!(a.iter().all(|n| *n == 1 || *n == 2) && a.iter().filter(|n| **n == 1).count() == 1, "{a:?}");
    assert_eq!(seen.iter().filter(|s| s.account == "acct-b").count(), 1);
    let ids: std::collections::HashSet<(&str, i64, &str)> = seen.iter().map(|s| (s.account.as_str(), s.n, s.id.as_str())).collect();
    assert_eq!(ids.len(), 3, "one id per row, however often sent: {seen:?}");
    drop_outbox(&client, &t).await;
}

/// Waits until `table` is empty, no aggregate is held and the relay is healthy again.
async fn all_relayed_and_released(client: &tokio_postgres::Client, table: &str, health: &std::sync::Arc<herald_outbox::relay::RelayHealth>) {
    herald_testkit::wait_until(Duration::from_secs(20), "every row relayed and every hold released", || async {
        pending(client, table).await == 0 && health.held_aggregates() == 0 && health.is_healthy()
    })
    .await;
}

/// The `seq` and `event_id` of `account`'s oldest row.
async fn oldest_of(client: &tokio_postgres::Client, table: &str, account: &str) -> (i64, uuid::Uuid) {
    let row = client.query_one(&format!("SELECT seq, event_id FROM {table} WHERE aggregate = $1 ORDER BY seq LIMIT 1"), &[&account]).await.unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_row_holds_back_only_its_aggregate_and_a_row_without_ce_id_goes_with_its_event_id() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.malformed", 2).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_malformed", 4).await;
    let t = outbox.table().name().to_owned();
    for account in ["acct-a", "acct-a", "acct-b", "acct-c", "acct-d"] {
        step(&mut client, &outbox, &topic, account).await.unwrap();
    }
    // Rows as a hand-written INSERT could leave them: a's first with a null header name,
    // d's with fewer header values than names, c's without its ce_id header.
    let (a1, _) = oldest_of(&client, &t, "acct-a").await;
    let first_name: String = client.query_one(&format!("SELECT header_names[1] FROM {t} WHERE seq = $1"), &[&a1]).await.unwrap().get(0);
    client.execute(&format!("UPDATE {t} SET header_names[1] = NULL WHERE seq = $1"), &[&a1]).await.unwrap();
    let (d1, _) = oldest_of(&client, &t, "acct-d").await;
    client.execute(&format!("UPDATE {t} SET header_values = header_values[1:1] WHERE seq = $1"), &[&d1]).await.unwrap();
    let (c1, c_id) = oldest_of(&client, &t, "acct-c").await;
    client
        .execute(
            &format!(
                "UPDATE {t} SET header_names = header_names[:array_position(header_names, 'ce_id') - 1] || header_names[array_position(header_names, 'ce_id') + 1:],
                     header_values = header_values[:array_position(header_names, 'ce_id') - 1] || header_values[array_position(header_names, 'ce_id') + 1:]
                 WHERE seq = $1 AND 'ce_id' = ANY(header_names)"
            ),
            &[&c1],
        )
        .await
        .unwrap();
    let options = RelayOptions { max_backoff: Duration::from_millis(300), ..options(&format!("malformed-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])) };
    let relay = Relay::new(config.clone(), outbox.table().clone(), &kafka, options).unwrap();
    let health = relay.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(20), "b and c relayed, a and d held", || {
        let (health, client, t) = (health.clone(), &client, t.clone());
        async move { pending_of(client, &t, "acct-b").await == 0 && pending_of(client, &t, "acct-c").await == 0 && health.held_aggregates() == 2 }
    })
    .await;
    assert_eq!(pending_of(&client, &t, "acct-a").await, 2, "a:2 must not be relayed while a:1 is not");
    assert_eq!(pending_of(&client, &t, "acct-d").await, 1);
    let error = health.last_error().unwrap_or_default();
    assert!(error.contains("malformed row") && (error.contains(&format!("seq {a1} ")) || error.contains(&format!("seq {d1} "))), "{error}");
    assert!(!health.is_healthy());
    // The operator mends a's row and deletes d's: both aggregates go on, a in order.
    client.execute(&format!("UPDATE {t} SET header_names[1] = $2 WHERE seq = $1"), &[&a1, &first_name]).await.unwrap();
    client.execute(&format!("DELETE FROM {t} WHERE seq = $1"), &[&d1]).await.unwrap();
    all_relayed_and_released(&client, &t, &health).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let seen = read_topic(&kafka, &topic_name);
    let a: Vec<i64> = seen.iter().filter(|s| s.account == "acct-a").map(|s| s.n).collect();
    assert_eq!(a, [1, 2], "{seen:?}");
    let c: Vec<&str> = seen.iter().filter(|s| s.account == "acct-c").map(|s| s.id.as_str()).collect();
    assert_eq!(c, [c_id.to_string().as_str()], "c's record carries its row's event_id as ce_id");
    assert!(seen.iter().all(|s| s.account != "acct-d"), "{seen:?}");
    drop_outbox(&client, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_the_relay_cannot_queue_hold_back_only_their_aggregate() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.oversize", 2).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_oversize", 4).await;
    let t = outbox.table().name().to_owned();
    // Three rows of a over the relay's limit (accepted by the outbox's), more than a batch.
    for _ in 0..3 {
        step(&mut client, &outbox, &topic, "acct-a").await.unwrap();
        pad_newest_row(&client, &t, 4000).await;
    }
    for _ in 0..2 {
        step(&mut client, &outbox, &topic, "acct-b").await.unwrap();
    }
    let relay_kafka = kafka.clone().set("message.max.bytes", "2000");
    let options = RelayOptions { batch_size: 2, max_backoff: Duration::from_millis(300), ..options(&format!("oversize-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])) };
    let relay = Relay::new(config.clone(), outbox.table().clone(), &relay_kafka, options).unwrap();
    let health = relay.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(15), "the other aggregate is relayed", || {
        let (client, t) = (&client, t.clone());
        async move { pending_of(client, &t, "acct-b").await == 0 }
    })
    .await;
    assert_eq!(pending_of(&client, &t, "acct-a").await, 3);
    assert!(health.last_error().is_some_and(|e| e.contains("message.max.bytes")), "{:?}", health.last_error());
    assert_eq!(health.held_aggregates(), 1);
    assert!(!health.is_healthy());
    // Rows that fit again go out, in order.
    let seqs: Vec<i64> = client.query(&format!("SELECT seq FROM {t} WHERE aggregate = 'acct-a'"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for seq in seqs {
        unpad_row(&client, &t, seq).await;
    }
    all_relayed_and_released(&client, &t, &health).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let seen = read_topic(&kafka, &topic_name);
    let verdict = check(&seen, &state(&client, &t).await);
    assert_eq!((verdict.records, verdict.duplicates, verdict.out_of_order_repeats), (5, 0, 0), "{verdict:?}");
    drop_outbox(&client, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_holds_rows_up_to_batch_bytes() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.bytes", 1).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_bytes", 1).await;
    let t = outbox.table().name().to_owned();
    for _ in 0..5 {
        step(&mut client, &outbox, &topic, "acct-1").await.unwrap();
    }
    let payload: i32 = client.query_one(&format!("SELECT max(octet_length(payload)) FROM {t}"), &[]).await.unwrap().get(0);
    let sizes: Vec<i32> = client.query(&format!("SELECT octet_length(payload) FROM {t}"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(sizes.iter().all(|s| *s == payload), "equal payloads: {sizes:?}");
    // Two rows' payload per batch: 5 rows in batches of 2, 2 and 1. Polling and
    // rebalancing once a minute, so a batch cut by bytes must go on at once by itself.
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = reads.clone();
    let options = RelayOptions {
        batch_bytes: 2 * i64::from(payload),
        poll_interval: Duration::from_secs(60),
        rebalance_interval: Duration::from_secs(60),
        fault: Some(std::sync::Arc::new(move |step| {
            if step == herald_outbox::relay::Step::Read {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })),
        ..options(&format!("bytes-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
    };
    let relay = Relay::new(config.clone(), outbox.table().clone(), &kafka, options).unwrap();
    let health = relay.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(10), "every row relayed", || {
        let health = health.clone();
        async move { health.relayed() == 5 }
    })
    .await;
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 3, "batches of 2, 2 and 1 rows");
    stop.cancel();
    task.await.unwrap().unwrap();
    let seen = read_topic(&kafka, &topic_name);
    let verdict = check(&seen, &state(&client, &t).await);
    assert_eq!((verdict.records, verdict.duplicates), (5, 0));
    drop_outbox(&client, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_left_without_an_answer_drops_the_session_and_the_relay_goes_on() {
    let kafka = herald_testkit::kafka().await;
    let topic_name = herald_testkit::topic(&kafka, "outbox.stuck", 2).await;
    let topic: Topic<Steps> = Topic::named(&topic_name);
    let config = herald_outbox::config(&shared_postgres()).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let outbox = outbox(&mut client, "t_stuck", 2).await;
    let t = outbox.table().name().to_owned();
    let options = RelayOptions {
        statement_timeout: Duration::from_secs(1),
        max_backoff: Duration::from_millis(200),
        ..options(&format!("stuck-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
    };
    let relay = Relay::new(config.clone(), outbox.table().clone(), &kafka, options).unwrap();
    let health = relay.health();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(10), "the relay owns the buckets", || {
        let health = health.clone();
        async move { health.owned_buckets() == 2 }
    })
    .await;
    // A transaction holds the table: the relay's next read gets no answer while it lasts.
    let mut locker = herald_outbox::connect(&config).await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE")).await.unwrap();
    herald_testkit::wait_until(Duration::from_secs(10), "the relay gave up on its statement", || {
        let health = health.clone();
        async move { health.last_error().is_some_and(|e| e.contains("did not answer")) }
    })
    .await;
    assert!(!health.is_healthy());
    lock.rollback().await.unwrap();
    step(&mut client, &outbox, &topic, "acct-1").await.unwrap();
    herald_testkit::wait_until(Duration::from_secs(20), "relayed on a new session", || {
        let health = health.clone();
        async move { health.relayed() == 1 && health.is_healthy() }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    drop_outbox(&client, &t).await;
}

/// A service whose outbox has another bucket count than the table was made with (it never
/// called `ensure_schema`, which refuses it) gets `BucketMismatch` from `publish`, and
/// nothing is written. Before, its rows went into buckets no relay hashes their aggregate
/// to: some never relayed (buckets past the table's count), others in a second bucket of
/// their aggregate, relayed from two places at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_with_another_bucket_count_than_its_table_writes_nothing() {
    let url = shared_postgres();
    let config = herald_outbox::config(&url).unwrap();
    let mut client = herald_outbox::connect(&config).await.unwrap();
    let made = outbox(&mut client, "t_buckets", 16).await;
    let table = made.table().name().to_owned();
    let topic: Topic<Steps> = Topic::named("outbox.buckets.unused");
    let other = herald_outbox::Outbox::new(herald_outbox::OutboxTable::new(&table).unwrap().buckets(32).unwrap(), "/test/outbox");
    let tx = client.transaction().await.unwrap();
    let refused = other.publish(&tx, &topic, &Stepped { account: "acct-1".into(), n: 1 }).await;
    assert!(
        matches!(&refused, Err(herald_outbox::OutboxError::BucketMismatch { existing: 16, configured: 32, .. })),
        "{refused:?}"
    );
    // The table's own count is taken, in the same transaction.
    made.publish(&tx, &topic, &Stepped { account: "acct-1".into(), n: 1 }).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(pending(&client, &table).await, 1, "only the row of the table's own count");
    drop_outbox(&client, &table).await;
}
