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
    herald_testkit::wait_until(Duration::from_secs(10), "the relay took the vanished relay's buckets", || {
        let health = health.clone();
        async move { health.owned_buckets() == 4 }
    })
    .await;
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
