//! `herald dlq list|show|replay`: dead-lettered records.
//!
//! `TOPIC` is the dead-letter topic (`shop.orders.dlq`) or the topic it belongs to
//! (`shop.orders`, mapped with [`herald_bus::dead_letter::topic_for`]). Reading takes
//! the whole dead-letter topic up to its current end; nothing is committed.
//!
//! `replay` sends one letter at a time, in dead-letter order, each to the partition it
//! came from when the letter records it and the topic still has it (else, or with
//! `--by-key`, where the partitioner puts its key). It stops at the first letter it cannot send, so a later
//! letter of the same key never lands before an earlier one: it lists what was replayed
//! and what was not, and exits non-zero. Letters stay in the dead-letter topic either way.
//! A record dead-lettered more than once (by several groups, or again by each rebuild of
//! a projection) is replayed once, from its first letter.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use herald_bus::dead_letter::{self, DeadLetter};
use herald_bus::publisher::Record;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::Offset;
use serde_json::json;

use crate::context::Context;
use crate::exit::{invalid, out, outln, Invalid};
use crate::payload::Payloads;
use herald_cli::json::AvroJson;
use crate::read;
use crate::record::{hex_prefix, one_line};

/// Dead-letter commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// One line per dead letter: where it is, where it came from, why.
    List(ListArgs),
    /// Everything about one dead letter: headers, and the payload decoded if it can be.
    Show(ShowArgs),
    /// Publish dead-lettered records again to their original topic and partition, in
    /// order, with key, value and headers unchanged (the record gets a new timestamp);
    /// stops at the first record that cannot be sent.
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
    /// Only the dead letters of this consumer group.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
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
    #[command(flatten)]
    pub registry: crate::context::RegistryArgs,
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
    /// Only the dead letters of this consumer group.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Send each record where the partitioner puts its key (librdkafka's `partitioner`
    /// of the configuration, murmur2 by default as Herald's publisher and Java's client),
    /// not back to the partition it was read from: for letters an engine refused as on
    /// another partition than their aggregate's (their producer used another partitioner).
    #[arg(long)]
    pub by_key: bool,
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

/// One line per dead letter: every text that came from headers or the key has its
/// control characters (newlines, tabs, escapes) escaped.
fn summary_line(dl: &DeadLetter) -> String {
    let key = dl.key.as_ref().map_or(Cow::Borrowed("(none)"), |k| String::from_utf8_lossy(k));
    format!(
        "{}/{}  {}/{}/{}  stage={} attempts={} group={} time={} key={}  {}",
        dl.dlq_partition,
        dl.dlq_offset,
        one_line(&dl.topic),
        dl.partition,
        dl.offset,
        one_line(&dl.stage),
        dl.attempts,
        one_line(&dl.group),
        one_line(&dl.time),
        one_line(&key),
        one_line(&dl.reason)
    )
}

async fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<()> {
    let (_, letters) = read_all(ctx, &args.topic).await?;
    for dl in letters.iter().filter(|dl| args.group.as_deref().is_none_or(|g| dl.group == g)) {
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
    let payloads = ctx.payloads(&args.registry)?;
    out!("{}", details(&payloads, &dl).await);
    consumer.unassign().ok();
    Ok(())
}

/// The full description of a dead letter, for `show`.
async fn details(payloads: &Payloads, dl: &DeadLetter) -> String {
    let mut out = String::new();
    // Every value came from the log: control characters are escaped, as in `list`, so a
    // key or header cannot forge lines or move the terminal's cursor.
    let mut field = |name: &str, value: &dyn std::fmt::Display| out.push_str(&format!("{name:<12}{}\n", one_line(&value.to_string())));
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
        out.push_str(&format!("  {}: {}\n", one_line(&String::from_utf8_lossy(key)), one_line(&value)));
    }
    match dl.payload.as_deref() {
        None => out.push_str("payload     (none)\n"),
        Some(payload) => match payloads.decode(payload).await {
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
        .filter(|dl| args.group.as_deref().is_none_or(|g| dl.group == g))
        .collect();
    // One record dead-lettered several times (each rebuild of a projection dead-letters
    // its poison records again, under its own group) goes back once.
    let mut originals = std::collections::HashSet::new();
    let (chosen, repeated): (Vec<&DeadLetter>, Vec<&DeadLetter>) = chosen.into_iter().partition(|dl| dl.partition < 0 || originals.insert((dl.topic.as_str(), dl.partition, dl.offset)));
    for dl in &repeated {
        eprintln!("skipped: {dlq} {}/{} is another letter of {}/{}/{}, which goes back once, with its first letter", dl.dlq_partition, dl.dlq_offset, dl.topic, dl.partition, dl.offset);
    }
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
    let partitions = original_partitions(ctx, &chosen).await?;
    // Each send is awaited before the next (below): waiting `linger.ms` for more records to
    // batch with would only add its 5 ms to every one (2 000 letters: 12 s, against 1.5 s).
    let kafka = if ctx.kafka.get("linger.ms").or(ctx.kafka.get("queue.buffering.max.ms")).is_some() { ctx.kafka.clone() } else { ctx.kafka.clone().set("linger.ms", "0") };
    let publisher = herald_bus::Publisher::new(&kafka, herald_bus::PublisherOptions::new("/herald/cli/dlq-replay")).context("cannot create the publisher")?;
    for (i, dl) in chosen.iter().enumerate() {
        let known = partitions.get(&dl.topic).and_then(|p| p.as_deref());
        if !args.by_key && dl.partition >= 0 && known.is_some_and(|p| !p.contains(&dl.partition)) {
            eprintln!(
                "warning: {dlq} {}/{}: {} has no partition {} any more; the record goes where its key is partitioned",
                dl.dlq_partition, dl.dlq_offset, dl.topic, dl.partition
            );
        }
        // One at a time, in dead-letter order, so records of one key keep their order.
        let record = if args.by_key { dl.replay_record() } else { replay_record(dl, known) };
        match publisher.send_record(record).await {
            Ok((partition, offset)) => outln!(
                "replayed {dlq} {}/{} -> {} {partition}/{offset} (was {}/{})",
                dl.dlq_partition, dl.dlq_offset, dl.topic, dl.partition, dl.offset
            ),
            Err(e) => {
                // Stop: a later letter of the same key must not land before this one.
                eprintln!("error: {dlq} {}/{} not replayed: {e}", dl.dlq_partition, dl.dlq_offset);
                let rest = &chosen[i + 1..];
                for dl in rest {
                    eprintln!("not replayed: {dlq} {}/{} (replay stopped at {}/{})", dl.dlq_partition, dl.dlq_offset, chosen[i].dlq_partition, chosen[i].dlq_offset);
                }
                publisher.flush(Duration::from_secs(30)).await.context("flushing the producer")?;
                anyhow::bail!(
                    "replay stopped at the first failure: {i} of {} dead letter(s) replayed, {} not (the failed one and every later one)",
                    chosen.len(),
                    rest.len() + 1
                );
            }
        }
    }
    publisher.flush(Duration::from_secs(30)).await.context("flushing the producer")?;
    Ok(())
}

/// The partitions of each original topic of `letters`; `None` for a topic that does not
/// exist (sending to it fails, or creates it where the broker does that).
async fn original_partitions(ctx: &Context, letters: &[&DeadLetter]) -> anyhow::Result<HashMap<String, Option<Vec<i32>>>> {
    let mut found = HashMap::new();
    if letters.is_empty() {
        return Ok(found);
    }
    let consumer = read::consumer(ctx, false)?;
    for dl in letters {
        if found.contains_key(&dl.topic) {
            continue;
        }
        let partitions = match read::partitions(&consumer, &dl.topic).await {
            Ok(p) => Some(p),
            Err(e) if e.downcast_ref::<Invalid>().is_some() => None,
            Err(e) => return Err(e),
        };
        found.insert(dl.topic.clone(), partitions);
    }
    Ok(found)
}

/// The record that puts `dl` back: its original key, value and headers, on the
/// partition it was read from when the letter records one that `partitions` (the
/// topic's, when known) has. Otherwise the partitioner decides: by key, or any
/// partition for a keyless record.
fn replay_record(dl: &DeadLetter, partitions: Option<&[i32]>) -> Record {
    let record = dl.replay_record();
    match partitions {
        Some(p) if dl.partition >= 0 && p.contains(&dl.partition) => record.to_partition(dl.partition),
        _ => record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(partition: i32, key: Option<&[u8]>, reason: &str) -> DeadLetter {
        DeadLetter {
            dlq_partition: 0,
            dlq_offset: 5,
            reason: reason.to_owned(),
            stage: "handler".into(),
            attempts: 2,
            topic: "shop.orders".into(),
            partition,
            offset: 41,
            group: "billing".into(),
            time: "2024-01-01T00:00:00Z".into(),
            key: key.map(<[u8]>::to_vec),
            payload: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_letter_goes_back_to_its_partition_when_the_topic_has_it() {
        assert_eq!(replay_record(&letter(2, None, "r"), Some(&[0, 1, 2])).partition, Some(2));
        assert_eq!(replay_record(&letter(2, Some(b"k"), "r"), Some(&[0, 1, 2])).partition, Some(2));
        assert_eq!(replay_record(&letter(5, None, "r"), Some(&[0, 1, 2])).partition, None, "partition gone");
        assert_eq!(replay_record(&letter(-1, None, "r"), Some(&[0, 1, 2])).partition, None, "not recorded");
        assert_eq!(replay_record(&letter(2, None, "r"), None).partition, None, "topic unknown");
    }

    #[test]
    fn a_summary_is_one_line_whatever_the_reason_and_key_hold() {
        let dl = letter(1, Some(b"o-1\nfake 0/0 line"), "boom\n  at handler\r\n\u{1b}[31mred\ttab");
        let line = summary_line(&dl);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains("key=o-1\\nfake 0/0 line"), "{line}");
        assert!(line.ends_with("boom\\n  at handler\\r\\n\\u{1b}[31mred\\ttab"), "{line}");
        assert!(summary_line(&letter(1, None, "plain")).contains("key=(none)  plain"));
        assert_eq!(one_line("ünïcode stays"), "ünïcode stays");
    }
}
