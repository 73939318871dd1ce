//! Crash consistency: the projector is killed at many points while it works through a
//! stream (aborted at crash points between apply and commit, after commit, after a dead
//! letter, and SIGKILLed from outside), restarted each time, and its final view must equal
//! a fold of the whole log: nothing lost, nothing counted twice.

use std::time::Duration;

use herald_bus::Topic;
use herald_shop::OrderEvent;
use herald_testkit::{kafka, topic, unique};

use crate::support::*;

/// Crash points, in the order the runs hit them. Each run gets a fresh backlog (with a
/// poison record) so the point is reached with work left to do.
const CRASH_POINTS: &[&str] = &[
    "after_apply:1",
    "before_apply:3",
    "after_commit:2",
    "after_dlq:1",
    "after_apply:4",
    "after_commit:1",
    "before_apply:1",
    "after_apply:7",
    "after_dlq:1",
];

async fn crash_consistency(backend: Backend) {
    let Some(store) = fresh_store(backend).await else { return };
    let config = kafka().await;
    let orders: Topic<OrderEvent> = Topic::named(topic(&config, "proj.crash", 4).await);
    let group = unique("g.crash");
    let publisher = publisher(&config);
    let mut opts = Opts::new(orders.name(), &group, &store);
    // Static membership: a restarted process takes over its predecessor's partitions at
    // once instead of waiting for the dead member's session to time out.
    opts.extra.push(format!("group.instance.id={group}.member"));
    let mut crashed = 0;
    for (i, point) in CRASH_POINTS.iter().enumerate() {
        publish_orders(&publisher, &orders, 600, 0..800, i as u64).await;
        publish_poison(&publisher, &orders, 1, usize::from(i % 2 == 0), &format!("r{i}")).await;
        let proc = start(&Opts { crash_at: Some((*point).to_owned()), ..opts.clone() }).await;
        let log = proc.log.clone();
        if proc.wait_crash(Duration::from_secs(60)).await {
            crashed += 1;
        } else {
            panic!("run {i} did not reach crash point {point}; log {}:\n{}", log.display(), tail(&log));
        }
    }
    // Two more deaths by SIGKILL from outside, at whatever point the process is.
    for i in 0..2 {
        publish_orders(&publisher, &orders, 800, 0..800, 100 + i).await;
        let proc = start(&opts).await;
        let started = std::time::Instant::now();
        while proc.status().await.is_none_or(|s| s.applied_total < 100 * (i + 1)) && started.elapsed() < DEADLINE {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        proc.kill9().await;
        crashed += 1;
    }
    // The last run, without a crash, catches up and stops cleanly.
    publish_orders(&publisher, &orders, 300, 0..800, 999).await;
    let proc = start(&opts).await;
    wait_caught_up(&config, &store, orders.name(), "the last run catches up").await;
    proc.terminate().await;

    let (expected, poison) = fold_topic(&config, orders.name()).await;
    let view = read_view(&store).await;
    assert_eq!(non_zero(&view), non_zero(&expected), "{backend:?}: after {crashed} crashes the view equals the fold of the log");
    let dead = stored_dead_letters(&store).await;
    assert_eq!(dead.len(), poison, "every poison record recorded once in herald_dead_letters: {dead:?}");
    assert!(crashed >= 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_every_stage_the_sqlite_view_equals_the_fold() {
    crash_consistency(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_every_stage_the_postgres_view_equals_the_fold() {
    crash_consistency(Backend::Postgres).await;
}
