//! The accounts aggregate as processes against the real broker (issue 11 §4): many
//! concurrent clients withdraw from a few accounts while `shop accounts` instances are
//! killed (`kill -9`) and restarted and a new instance joins. Then, from the topics, with
//! a reader that shares no code with `decide`/`evolve`:
//! - every command got exactly one reply (the client's, or, after a timeout, the one
//!   found on the reply topic by its id), and the reply topic holds exactly one per command;
//! - each account's events have versions 1, 2, 3, ... in order, no gap, no duplicate id;
//! - the balance folded from the events never goes below zero, and equals what the
//!   replies say was accepted;
//! - `herald aggregate show` (by the stream index) prints, for each account, the version,
//!   the stream and the balance of that fold;
//! - the live aggregate agrees with the fold (a withdrawal of the folded balance + 1 is
//!   refused, one of exactly the balance at the folded version is accepted).
//!
//! `cargo test -p herald-shop --test accounts` (needs `KAFKA_BOOTSTRAP_SERVERS`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_aggregate::{CommandClient, CommandReply, Outcome, SendError, SendOptions};
use herald_bus::admin::{self, TopicSpec};
use herald_bus::{KafkaConfig, Topic};
use herald_shop::accounts::{AccountCommand, Deposit, OpenAccount, Withdraw};
use rand::Rng;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

/// One `shop accounts` process (restartable); killed on drop.
struct Proc {
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn start(config: &KafkaConfig, prefix: &str, instance: &str, dir: &std::path::Path) -> Proc {
        let args = ["accounts", "--bootstrap", config.bootstrap(), "--instance", instance, "--topic-prefix", prefix, "--session-timeout", "6s"].iter().map(|s| (*s).to_owned()).collect();
        let mut proc = Proc { args, child: None, log: dir.join(format!("{instance}.log")) };
        proc.spawn();
        proc
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_shop")).args(&self.args).env("RUST_LOG", "info,rdkafka=warn").env_remove("SHOP_TOPIC_PREFIX").stdin(Stdio::null()).stdout(log).stderr(err).spawn().expect("shop runs");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a client saw for one command.
#[derive(Debug, Clone)]
struct Sent {
    id: Uuid,
    account: String,
    /// `None`: timed out (the outcome is looked up later).
    reply: Option<CommandReply>,
}

/// Every record of `topic` (all partitions, from the beginning, read_committed), waiting
/// until at least `at_least` were read (or `within` passed), then until nothing new came
/// for 2 s.
async fn read_topic(config: &KafkaConfig, topic: &str, at_least: usize, within: Duration) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: StreamConsumer = config
        .client_config(&[("group.id", &herald_testkit::unique("accounts-reader")), ("enable.auto.commit", "false"), ("auto.offset.reset", "earliest"), ("isolation.level", "read_committed")])
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    loop {
        let until = if out.len() < at_least { deadline } else { (tokio::time::Instant::now() + Duration::from_secs(2)).min(deadline) };
        match tokio::time::timeout_at(until, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        }
    }
    out
}

fn header(msg: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    msg.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The fold of the test's own: from the raw Avro of each event, by type name, with no
/// code of the aggregate (only the field layout of the .avsc files: a string then a long).
fn amount_of(payload: &[u8]) -> (String, i64) {
    // Single-object encoding: C3 01, 8-byte fingerprint, then the datum.
    let datum = &payload[10..];
    let (len, rest) = zigzag(datum);
    let account = String::from_utf8(rest[..len as usize].to_vec()).expect("utf-8 account id");
    let rest = &rest[len as usize..];
    let amount = if rest.is_empty() { 0 } else { zigzag(rest).0 };
    (account, amount)
}

/// A zigzag varint (Avro `long`) and what follows it.
fn zigzag(bytes: &[u8]) -> (i64, &[u8]) {
    let (mut value, mut shift, mut used) = (0u64, 0, 0);
    for b in bytes {
        used += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (((value >> 1) as i64) ^ -((value & 1) as i64), &bytes[used..])
}

/// Sends `command` until it has a reply: on a timeout, sends it again with the same id
/// (before the aggregate forgets it: used only while few commands are in flight).
async fn settle<E>(client: &CommandClient<AccountCommand>, command: E) -> CommandReply
where
    E: herald_bus::Event + Clone,
    AccountCommand: herald_bus::event::Member<E>,
{
    let id = Uuid::now_v7();
    for _ in 0..12 {
        match client.send_with(command.clone(), SendOptions::default().command_id(id).timeout(Duration::from_secs(10))).await {
            Ok(reply) => return reply,
            Err(SendError::Timeout { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no reply to {id} in 2 minutes")
}

/// Two processes started with one `--instance` (one `group.instance.id`) would fence each
/// other for ever, each restarting its engine: one of them stops with an error that says
/// why, and the other goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_with_one_instance_id_leave_one_running_and_the_other_says_why() {
    let config = herald_testkit::kafka().await;
    let prefix = format!("{}.", herald_testkit::unique("accounts-dup"));
    let dir = std::env::temp_dir().join(prefix.trim_end_matches('.'));
    std::fs::create_dir_all(&dir).expect("run folder");
    let args: Vec<String> = ["accounts", "--bootstrap", config.bootstrap(), "--instance", "same", "--topic-prefix", &prefix, "--session-timeout", "6s"].iter().map(|s| (*s).to_owned()).collect();
    let mut first = Proc { args: args.clone(), child: None, log: dir.join("first.log") };
    first.spawn();
    herald_testkit::wait_until(Duration::from_secs(60), "the first process has its partitions", || {
        let log = first.log.clone();
        async move { std::fs::read_to_string(log).unwrap_or_default().contains("partitions assigned") }
    })
    .await;
    let mut second = Proc { args, child: None, log: dir.join("second.log") };
    second.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut stopped, mut running) = loop {
        if !first.running() {
            break (first, second);
        }
        if !second.running() {
            break (second, first);
        }
        assert!(std::time::Instant::now() < deadline, "both still running after 120 s: {}", std::fs::read_to_string(&second.log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = stopped.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).expect("an exit status");
    let log = std::fs::read_to_string(&stopped.log).unwrap_or_default();
    assert!(!status.success(), "{log}");
    assert!(log.contains("another process runs with this instance id"), "{log}");
    // The other one goes on: it answers a command.
    let client = CommandClient::<AccountCommand>::new(&config, Topic::named(format!("{prefix}shop.accounts.commands")), format!("{prefix}shop.accounts.replies")).await.expect("client");
    let reply = client.send_with(OpenAccount { account_id: "acct-1".to_owned(), owner: "c-1".to_owned() }, SendOptions { timeout: Some(Duration::from_secs(60)), ..SendOptions::default() }).await.expect("a reply");
    assert!(reply.is_accepted(), "{reply:?}");
    assert!(running.running(), "{}", std::fs::read_to_string(&running.log).unwrap_or_default());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_withdrawals_through_kills_restarts_and_a_join_keep_every_account_exact() {
    let config = herald_testkit::kafka().await;
    let prefix = format!("{}.", herald_testkit::unique("accounts"));
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).expect("test folder");
    let name = |t: &str| format!("{prefix}{t}");
    let specs: Vec<TopicSpec> = ["shop.accounts.commands", "shop.accounts", "shop.accounts.replies"].iter().map(|t| TopicSpec::new(name(t)).partitions(6)).collect();
    admin::create_topics(&config, &specs).await.expect("topics");
    for spec in &specs {
        herald_testkit::wait_until(Duration::from_secs(30), "topic metadata", || async { admin::partition_count(&config, &spec.name).await.ok().flatten().is_some() }).await;
    }
    let mut procs = vec![Proc::start(&config, &prefix, "acc-0", &dir), Proc::start(&config, &prefix, "acc-1", &dir)];
    let commands: Topic<AccountCommand> = Topic::named(name("shop.accounts.commands"));
    let replies = name("shop.accounts.replies");
    let clients = [CommandClient::new(&config, Topic::named(commands.name()), replies.clone()).await.expect("client"), CommandClient::new(&config, commands, replies.clone()).await.expect("client")];

    // Four accounts with 20 000 cents each.
    let accounts: Vec<String> = (0..4).map(|i| format!("acct-{i}")).collect();
    for account in &accounts {
        let opened = settle(&clients[0], OpenAccount { account_id: account.clone(), owner: format!("owner-{account}") }).await;
        assert_eq!(opened.outcome, Outcome::Accepted, "{opened:?}");
        let deposited = settle(&clients[0], Deposit { account_id: account.clone(), amount_cents: 20_000 }).await;
        assert_eq!(deposited.outcome, Outcome::Accepted, "{deposited:?}");
    }

    // 12 concurrent senders, each sending until the chaos below is over (at least 60
    // commands): mostly withdrawals of 1..700 cents (the accounts run dry, so many are
    // refused), some deposits. How long that takes does not depend on how fast replies come.
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let chaos_over = tokio_util::sync::CancellationToken::new();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..12 {
        let (client, accounts, sent, chaos_over) = (clients[s % 2].clone(), accounts.clone(), sent.clone(), chaos_over.clone());
        senders.spawn(async move {
            let mut n = 0;
            while n < 60 || !chaos_over.is_cancelled() {
                n += 1;
                // A quarter wait only 800 ms: those around a kill time out, and their
                // outcome is looked up by id afterwards.
                let (account, amount, deposit, impatient) = {
                    let mut rng = rand::rng();
                    (accounts[rng.random_range(0..accounts.len())].clone(), rng.random_range(1..700i64), rng.random_range(0..8) == 0, rng.random_range(0..4) == 0)
                };
                let options = SendOptions::default().timeout(if impatient { Duration::from_millis(800) } else { Duration::from_secs(8) });
                let result = if deposit {
                    client.send_with(Deposit { account_id: account.clone(), amount_cents: amount }, options).await
                } else {
                    client.send_with(Withdraw { account_id: account.clone(), amount_cents: amount }, options).await
                };
                let record = match result {
                    Ok(reply) => Sent { id: reply.command_id.parse().expect("uuid"), account, reply: Some(reply) },
                    Err(e @ SendError::Timeout { .. }) => Sent { id: e.command_id(), account, reply: None },
                    Err(e) => panic!("send: {e}"),
                };
                sent.lock().expect("lock").push(record);
            }
        });
    }

    // Chaos while they send: six times, kill -9 a random instance and restart it after a
    // moment; a third instance joins half way. Then the senders finish.
    let mut joined = false;
    for kills in 1..=6 {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(700..2500))).await;
        let victim = rand::rng().random_range(0..procs.len());
        procs[victim].kill9();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(100..1500))).await;
        procs[victim].spawn();
        if !joined && kills >= 3 {
            procs.push(Proc::start(&config, &prefix, "acc-2", &dir));
            joined = true;
        }
    }
    chaos_over.cancel();
    while let Some(done) = senders.join_next().await {
        done.expect("sender");
    }
    for (i, p) in procs.iter_mut().enumerate() {
        assert!(p.running(), "instance {i} exited by itself (log {})", p.log.display());
    }

    // Timed-out commands: their outcome, found by id on the reply topic.
    let mut sent = sent.lock().expect("lock").clone();
    let timeouts = sent.iter().filter(|s| s.reply.is_none()).count();
    for s in sent.iter_mut().filter(|s| s.reply.is_none()) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while s.reply.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no reply to timed-out command {} on the reply topic", s.id);
            s.reply = clients[0].find_reply(s.id, Duration::from_secs(20)).await.expect("lookup");
        }
    }
    assert!(sent.len() >= 12 * 60, "{} commands sent", sent.len());
    assert!(timeouts > 0, "some sends timed out (their outcome was then found by id)");

    // The reply topic: exactly one reply per command, and it is the one the client got.
    let all_ids: usize = 8 + sent.len(); // the setup's 8 commands and the senders'
    let reply_records = read_topic(&config, &replies, all_ids, Duration::from_secs(60)).await;
    let mut on_topic: HashMap<String, Vec<CommandReply>> = HashMap::new();
    let codec = herald_bus::codec::SingleObject::new(<herald_aggregate::Replies as herald_bus::EventFamily>::schemas().clone());
    for m in &reply_records {
        let (writer, datum) = codec.split(m.payload().expect("payload")).expect("framing");
        let Some(herald_aggregate::Replies::Reply(r)) = <herald_aggregate::Replies as herald_bus::EventFamily>::decode(&writer.name, &writer, datum).expect("decodes") else { panic!("not a reply") };
        assert_eq!(m.key(), Some(r.command_id.as_bytes()), "keyed by command id");
        on_topic.entry(r.command_id.clone()).or_default().push(r);
    }
    for s in &sent {
        let found = on_topic.get(&s.id.to_string()).unwrap_or_else(|| panic!("no reply record for {}", s.id));
        assert_eq!(found.len(), 1, "command {} has {} reply records: {found:?}", s.id, found.len());
        assert_eq!(Some(&found[0]), s.reply.as_ref(), "the client's reply is the one on the topic");
        assert_eq!(found[0].aggregate_id, s.account);
    }

    // The events: contiguous versions per account, no duplicate id, never negative.
    let accepted_events: usize = on_topic.values().flatten().map(|r| r.event_ids.len()).sum();
    let events = read_topic(&config, &name("shop.accounts"), accepted_events, Duration::from_secs(60)).await;
    assert_eq!(events.len(), accepted_events, "every accepted event, once");
    let mut ids = HashSet::new();
    let mut fold: BTreeMap<String, (i64, i64)> = BTreeMap::new(); // account → (version, balance)
    let mut by_partition_order: Vec<&rdkafka::message::OwnedMessage> = events.iter().collect();
    by_partition_order.sort_by_key(|m| (m.partition(), m.offset()));
    let mut withdrawn_total = 0;
    for m in by_partition_order {
        let id = header(m, "ce_id").expect("ce_id");
        assert!(ids.insert(id.clone()), "duplicate event id {id}");
        let kind = header(m, "ce_type").expect("ce_type");
        let (account, amount) = amount_of(m.payload().expect("payload"));
        assert_eq!(m.key(), Some(account.as_bytes()), "keyed by account");
        let sequence: i64 = header(m, "ce_sequence").expect("ce_sequence").parse().expect("decimal");
        let entry = fold.entry(account.clone()).or_insert((0, 0));
        assert_eq!(sequence, entry.0 + 1, "{account}: version {sequence} after {}", entry.0);
        entry.0 = sequence;
        match kind.as_str() {
            "shop.accounts.AccountOpened" => assert_eq!(entry.1, 0),
            "shop.accounts.MoneyDeposited" => entry.1 += amount,
            "shop.accounts.MoneyWithdrawn" => {
                entry.1 -= amount;
                withdrawn_total += amount;
            }
            other => panic!("unexpected event type {other}"),
        }
        assert!(entry.1 >= 0, "{account} went negative: {} at version {sequence}", entry.1);
        let cause = header(m, "ce_causationid").expect("causation");
        let reply = on_topic.get(&cause).and_then(|r| r.first()).unwrap_or_else(|| panic!("event {id} caused by {cause}, which has no reply"));
        assert!(reply.event_ids.contains(&id), "the reply of {cause} lists event {id}");
    }
    let accepted_withdrawals: i64 = sent.iter().filter_map(|s| s.reply.as_ref()).filter(|r| r.outcome == Outcome::Accepted).count() as i64;
    assert!(accepted_withdrawals > 50, "enough commands were accepted to mean something: {accepted_withdrawals}");
    assert!(sent.iter().filter_map(|s| s.reply.as_ref()).any(|r| r.reason.as_deref() == Some("insufficient-funds")), "some ran dry");
    assert!(withdrawn_total > 0);

    // `herald aggregate show` (the stream index, then the records it names, the state
    // folded by the accounts' evolve) prints, for each account, the state and stream the
    // test's own fold found.
    let index_url = format!("sqlite:{}", dir.join("stream-index.db").display());
    let index = herald_projector::store::open(&index_url).expect("index store");
    let projector = herald_projector::Projector::builder(config.clone(), herald_testkit::unique("accounts-index"), &Topic::<herald_shop::accounts::AccountEvent>::named(name("shop.accounts")), herald_aggregate::StreamIndex::<herald_shop::accounts::Accounts>::new(), index.clone())
        .build()
        .await
        .expect("index");
    let stop_index = tokio_util::sync::CancellationToken::new();
    let indexing = tokio::spawn(projector.run(stop_index.clone().cancelled_owned()));
    herald_testkit::wait_until(Duration::from_secs(120), "the stream index has every event", || {
        let index = index.clone();
        let want = events.len() as i64;
        async move {
            let Ok(mut conn) = index.connect() else { return false };
            let Ok(mut tx) = conn.read() else { return false };
            matches!(tx.as_tx().query_opt("SELECT COUNT(*) FROM aggregate_stream", &[]), Ok(Some(row)) if row.int(0).ok() == Some(want))
        }
    })
    .await;
    let herald = herald_testkit::workspace_binaries(&["herald-cli"]).join("herald");
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    for account in &accounts {
        let (version, balance) = fold[account];
        let out = Command::new(&herald)
            .args(["--bootstrap", config.bootstrap(), "--schemas", schemas, "aggregate", "show", &name("shop.accounts"), account, "--store", &index_url, "--json"])
            .output()
            .expect("herald runs");
        assert!(out.status.success(), "herald aggregate show {account}: {}", String::from_utf8_lossy(&out.stderr));
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(shown["state"]["balance_cents"].as_i64(), Some(balance), "{account}: herald aggregate show against the fold: {shown}");
        assert_eq!((shown["version"].as_i64(), shown["state"]["open"].as_bool()), (Some(version), Some(true)), "{account}");
        let versions: Vec<i64> = shown["events"].as_array().expect("events").iter().filter_map(|e| e["version"].as_i64()).collect();
        assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "{account}: the stream shown");
    }
    stop_index.cancel();
    indexing.await.expect("index task").expect("index stopped in order");

    // The live aggregates agree with the fold.
    for account in &accounts {
        let (version, balance) = fold[account];
        let too_much = settle(&clients[1], Withdraw { account_id: account.clone(), amount_cents: balance + 1 }).await;
        assert_eq!(too_much.reason.as_deref(), Some("insufficient-funds"), "{account}: folded balance {balance}");
        if balance > 0 {
            let id = Uuid::now_v7();
            let all = clients[1].send_with(Withdraw { account_id: account.clone(), amount_cents: balance }, SendOptions::default().expect_version(version).command_id(id).timeout(Duration::from_secs(60))).await.expect("reply");
            assert_eq!((all.outcome, all.version), (Outcome::Accepted, Some(version + 1)), "{account}: at version {version} with {balance}: {all:?}");
        }
    }
    eprintln!("accounts chaos: {} commands, {timeouts} timed out and found by id, 6 kills, {} events", sent.len(), events.len());
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
