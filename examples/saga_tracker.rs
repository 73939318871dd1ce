//! The saga tracker: see every saga of the shop, its timeline, and whether it kept the
//! saga guarantee.
//!
//! ```sh
//! scripts/kafka start
//! cargo run -p herald-examples --example saga_tracker
//! ```
//!
//! Runs the tracker (`herald_tracker::Runner`, the same as `herald saga track`) on fresh
//! copies of the shop's topics (`example.<id>.shop.orders`, ...) into a SQLite file, then
//! publishes four sagas with the headers the participants write (correlation id shared,
//! causation id = the event before): one confirmed, one cancelled and compensated, one
//! that stopped an hour ago without an outcome, and one cancelled an hour ago whose stock
//! reservation was never released. It waits until the tracker recorded every event, prints
//! the list (the states `completed`, `compensated`, `stuck`, `failed` with its reason) and
//! the timeline of the compensated saga. Guarantee shown: the states come from the
//! participants' declarations (the same ones `herald saga check` checks), and a saga that
//! breaks the guarantee is reported, not hidden. With the shop's three services running,
//! `herald saga track` and `herald saga show ORDER_ID` do the same on the real topics.

use std::time::{Duration, Instant};

use herald_bus::admin::{create_topics, TopicSpec};
use herald_bus::{KafkaConfig, Publisher, PublisherOptions};
use herald_tracker::query::{self, Filter};
use herald_tracker::script::{Script, Step::*};
use herald_tracker::shop::Shop;
use herald_tracker::{Runner, TrackedSaga};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let config = KafkaConfig::new(bootstrap);
    let run = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    let prefix = format!("example.{run}.");
    let specs: Vec<TopicSpec> = Shop::topics().iter().map(|t| TopicSpec::new(format!("{prefix}{t}")).partitions(3)).collect();
    create_topics(&config, &specs).await?;
    let db = std::env::temp_dir().join(format!("herald-saga-tracker-{run}.db"));
    let store = herald_projector::store::open(&format!("sqlite:{}", db.display()))?;

    let tracker = Runner::<Shop>::new(config.clone(), format!("example-tracker-{run}"), store.clone()).topic_prefix(&prefix).stuck_after(Duration::from_secs(60)).build().await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(tracker.run(stop.clone().cancelled_owned()));

    let publisher = Publisher::new(&config, PublisherOptions::new("/example/script"))?;
    let script = Script::new(&publisher, &prefix);
    let (now, hour_ago, ms) = (chrono::Utc::now(), chrono::Utc::now() - chrono::Duration::hours(1), chrono::Duration::milliseconds(10));
    script.saga("order-confirmed", &[Placed, Reserved, Charged, Confirmed], now, ms).await?;
    let compensated = script.saga("order-compensated", &[Placed, Reserved, Declined, Cancelled, Released], now, ms).await?;
    script.saga("order-stuck", &[Placed, Reserved], hour_ago, ms).await?;
    script.saga("order-never-released", &[Placed, Reserved, Cancelled], hour_ago, ms).await?;

    let read = |filter: Filter| {
        let store = store.clone();
        async move { anyhow::Ok(tokio::task::spawn_blocking(move || query::list(&mut *store.connect()?, &filter, chrono::Utc::now())).await??) }
    };
    let filter = Filter { stuck_after: Duration::from_secs(60), ..Filter::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(filter.clone()).await?.iter().map(|s| s.events).sum::<i64>() < 14 {
        anyhow::ensure!(Instant::now() < deadline, "the tracker did not record the 14 events within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{:<22}  {:<12}  {:>6}  reason", "subject", "state", "events");
    for saga in read(filter).await? {
        println!("{:<22}  {:<12}  {:>6}  {}", saga.subject, saga.state.as_str(), saga.events, saga.reason.unwrap_or_default());
    }
    let id = compensated[0].id.to_string();
    let shown = tokio::task::spawn_blocking(move || query::show(&mut *store.connect()?, &id, chrono::Utc::now(), Duration::from_secs(60))).await??;
    if let Some(saga) = shown {
        println!("\nsaga {} ({}): {}", saga.summary.id, saga.summary.subject, saga.summary.state.as_str());
        for e in saga.timeline {
            println!("  {}  {:<32}  {}/{}@{}  caused by {}", e.time.format("%H:%M:%S%.3f"), e.event_type, e.topic, e.partition, e.offset, e.causation_id.unwrap_or_else(|| "-".into()));
        }
    }
    stop.cancel();
    running.await??;
    let _ = std::fs::remove_file(&db);
    Ok(())
}
