//! `herald dlq list|show|replay`: dead-lettered records.
//!
//! `TOPIC` is the dead-letter topic (`shop.orders.dlq`) or the topic it belongs to
//! (`shop.orders`, mapped with [`herald_bus::dead_letter::topic_for`]). Reading takes
//! the whole dead-letter topic up to its current end; nothing is committed.

use std::time::Duration;

use anyhow::Context as _;
use herald_bus::codec::{decode_value, SingleObject};
use herald_bus::dead_letter::{self, DeadLetter};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::Offset;
use serde_json::json;

use crate::context::Context;
use crate::exit::{invalid, out, outln};
use herald_cli::json::AvroJson;
use crate::read;
use crate::record::hex_prefix;

/// Dead-letter commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// One line per dead letter: where it is, where it came from, why.
    List(ListArgs),
    /// Everything about one dead letter: headers, and the payload decoded if it can be.
    Show(ShowArgs),
    /// Publish dead-lettered records again to their original topic, unchanged.
    Replay(ReplayArgs),
}

/// Arguments of `herald dlq list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The dead-letter topic, or the topic whose dead letters to list.
    pub topic: String,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `herald dlq show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The dead-letter topic, or the topic whose dead letter to show.
    pub topic: String,
    /// Partition of the dead letter (in the dead-letter topic).
    #[arg(long)]
    pub partition: i32,
    /// Offset of the dead letter (in the dead-letter topic).
    #[arg(long)]
    pub offset: i64,
}

/// Arguments of `herald dlq replay`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["offset", "all"])))]
pub struct ReplayArgs {
    /// The dead-letter topic, or the topic whose dead letters to replay.
    pub topic: String,
    /// Partition of the one dead letter to replay (with --offset).
    #[arg(long, requires = "offset")]
    pub partition: Option<i32>,
    /// Offset of the one dead letter to replay (with --partition).
    #[arg(long, requires = "partition")]
    pub offset: Option<i64>,
    /// Replay every dead letter (of --stage, if given).
    #[arg(long)]
    pub all: bool,
    /// Only dead letters of this stage.
    #[arg(long, value_parser = ["decode", "unknown-type", "handler"])]
    pub stage: Option<String>,
    /// Print what would be replayed; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a dead-letter command.
pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::List(args) => list(ctx, args).await,
        Command::Show(args) => show(ctx, args).await,
        Command::Replay(args) => replay(ctx, args).await,
    }
}

/// The dead-letter topic meant by `topic`.
fn dlq_topic(topic: &str) -> String {
    if topic.ends_with(".dlq") || topic.ends_with("_dlq") { topic.to_owned() } else { dead_letter::topic_for(topic) }
}

/// Every dead letter now in `topic`'s dead-letter topic; records without Herald's
/// dead-letter headers are reported on stderr and skipped.
async fn read_all(ctx: &Context, topic: &str) -> anyhow::Result<(String, Vec<DeadLetter>)> {
    let dlq = dlq_topic(topic);
    let mut letters = Vec::new();
    read::read_to_end(ctx, &dlq, |msg| {
        match DeadLetter::parse(msg) {
            Some(dl) => letters.push(dl),
            None => {
                use rdkafka::Message as _;
                eprintln!("warning: {dlq} {}/{} is not a Herald dead letter (no herald.dlq.* headers)", msg.partition(), msg.offset());
            }
        }
        Ok(())
    })
    .await?;
    Ok((dlq, letters))
}

fn summary_json(dl: &DeadLetter) -> serde_json::Value {
    json!({
        "dlq_partition": dl.dlq_partition,
        "dlq_offset": dl.dlq_offset,
        "topic": dl.topic,
        "partition": dl.partition,
        "offset": dl.offset,
        "stage": dl.stage,
        "attempts": dl.attempts,
        "group": dl.group,
        "time": dl.time,
        "reason": dl.reason,
        "key": dl.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
    })
}

fn summary_line(dl: &DeadLetter) -> String {
    format!(
        "{}/{}  {}/{}/{}  stage={} attempts={} group={} time={}  {}",
        dl.dlq_partition, dl.dlq_offset, dl.topic, dl.partition, dl.offset, dl.stage, dl.attempts, dl.group, dl.time, dl.reason
    )
}

async fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<()> {
    let (_, letters) = read_all(ctx, &args.topic).await?;
    for dl in &letters {
        if args.json {
            outln!("{}", summary_json(dl));
        } else {
            outln!("{}", summary_line(dl));
        }
    }
    Ok(())
}

async fn show(ctx: &Context, args: ShowArgs) -> anyhow::Result<()> {
    let dlq = dlq_topic(&args.topic);
    let consumer = read::consumer(ctx, true)?;
    let partitions = read::partitions(&consumer, &dlq).await?;
    if !partitions.contains(&args.partition) {
        invalid!("{dlq} has no partition {}", args.partition);
    }
    let marks = read::watermarks(&consumer, &dlq, &[args.partition]).await?;
    let (_, low, high) = marks[0];
    if args.offset < low || args.offset >= high {
        invalid!("{dlq}/{} has offsets {low}..{high}; {} is not among them", args.partition, args.offset);
    }
    read::assign(&consumer, &dlq, &[(args.partition, Offset::Offset(args.offset))])?;
    let received = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .with_context(|| format!("no record from {dlq}/{} within 30 s", args.partition))?;
    let msg = match received {
        Ok(msg) => msg,
        Err(KafkaError::PartitionEOF(_)) => invalid!("no record at {dlq}/{}/{}", args.partition, args.offset),
        Err(e) => return Err(e).context("reading the dead letter"),
    };
    use rdkafka::Message as _;
    if msg.offset() != args.offset {
        invalid!("no record at {dlq}/{}/{} (the next one is at {})", args.partition, args.offset, msg.offset());
    }
    let Some(dl) = DeadLetter::parse(&msg) else {
        invalid!("{dlq}/{}/{} is not a Herald dead letter (no herald.dlq.* headers)", args.partition, args.offset)
    };
    let codec = SingleObject::new(ctx.schemas()?);
    out!("{}", details(&codec, &dl));
    consumer.unassign().ok();
    Ok(())
}

/// The full description of a dead letter, for `show`.
fn details(codec: &SingleObject, dl: &DeadLetter) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: &dyn std::fmt::Display| out.push_str(&format!("{name:<12}{value}\n"));
    field("dead letter", &format!("{}/{}", dl.dlq_partition, dl.dlq_offset));
    field("original", &format!("{}/{}/{}", dl.topic, dl.partition, dl.offset));
    field("stage", &dl.stage);
    field("attempts", &dl.attempts);
    field("group", &dl.group);
    field("time", &dl.time);
    field("reason", &dl.reason);
    field("key", &dl.key.as_ref().map_or("(none)".to_owned(), |k| String::from_utf8_lossy(k).into_owned()));
    out.push_str("headers\n");
    for (key, value) in &dl.headers {
        let value = value.as_ref().map_or("(null)".into(), |v| String::from_utf8_lossy(v).into_owned());
        out.push_str(&format!("  {}: {value}\n", String::from_utf8_lossy(key)));
    }
    match dl.payload.as_deref() {
        None => out.push_str("payload     (none)\n"),
        Some(payload) => match codec.split(payload).and_then(|(writer, datum)| decode_value(&writer, None, datum).map(|v| (writer, v))) {
            Ok((writer, value)) => {
                out.push_str(&format!("payload     {} ({} bytes)\n", writer.name, payload.len()));
                let pretty = serde_json::to_string_pretty(&AvroJson(&value)).unwrap_or_default();
                for line in pretty.lines() {
                    out.push_str("  ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
            Err(e) => {
                out.push_str(&format!("payload     undecodable: {e}\n"));
                out.push_str(&format!("  {} bytes: {}\n", payload.len(), hex_prefix(payload, 64)));
            }
        },
    }
    out
}

async fn replay(ctx: &Context, args: ReplayArgs) -> anyhow::Result<()> {
    let (dlq, letters) = read_all(ctx, &args.topic).await?;
    let chosen: Vec<&DeadLetter> = letters
        .iter()
        .filter(|dl| match (args.partition, args.offset) {
            (Some(p), Some(o)) => dl.dlq_partition == p && dl.dlq_offset == o,
            _ => true,
        })
        .filter(|dl| args.stage.as_deref().is_none_or(|s| dl.stage == s))
        .collect();
    if let (Some(p), Some(o), true) = (args.partition, args.offset, chosen.is_empty()) {
        invalid!("no dead letter at {dlq}/{p}/{o}{}", args.stage.as_deref().map(|s| format!(" with stage {s}")).unwrap_or_default());
    }
    if args.dry_run {
        for dl in &chosen {
            outln!("would replay {dlq} {}/{} -> {} (was {}/{}), stage={}", dl.dlq_partition, dl.dlq_offset, dl.topic, dl.partition, dl.offset, dl.stage);
        }
        outln!("dry run: {} dead letter(s) would be replayed, nothing sent", chosen.len());
        return Ok(());
    }
    let publisher = ctx.publisher("/herald/cli/dlq-replay")?;
    let mut failed = 0;
    for dl in &chosen {
        // One at a time, in dead-letter order, so records of one key keep their order.
        match publisher.send_record(dl.replay_record()).await {
            Ok((partition, offset)) => outln!(
                "replayed {dlq} {}/{} -> {} {partition}/{offset} (was {}/{})",
                dl.dlq_partition, dl.dlq_offset, dl.topic, dl.partition, dl.offset
            ),
            Err(e) => {
                failed += 1;
                eprintln!("error: {dlq} {}/{} not replayed: {e}", dl.dlq_partition, dl.dlq_offset);
            }
        }
    }
    publisher.flush(Duration::from_secs(30)).await.context("flushing the producer")?;
    if failed > 0 {
        anyhow::bail!("{failed} dead letter(s) were not replayed");
    }
    Ok(())
}
