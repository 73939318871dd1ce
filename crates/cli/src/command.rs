//! `herald command`: send one command to an aggregate (herald-aggregate's wire contract)
//! and print its reply.
//!
//! The command is JSON mapped through its Avro schema (as `herald publish`), sent with
//! `ce_replyto` (the reply topic) and, with `--expect-version`, `ce_expectedversion`. The
//! reply (`herald.aggregate.CommandReply`) prints as one JSON object on stdout. Exit codes:
//! `0` accepted, `1` rejected (or not sent: a failure talking to Kafka before the command
//! could be written; or dead-lettered by the aggregate's engine, which then never decides
//! it: its key not its aggregate id, say), `2` bad input, `3` the outcome is unknown (no
//! reply in time, or a send that may have written the command): the command id printed on
//! stderr finds its reply later, or sends it again with `--id`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use herald_aggregate::client::find_dead_letter;
use herald_aggregate::{CommandClient, SendOptions};
use herald_bus::publisher::Record;
use herald_bus::{Metadata, Topic};

use crate::context::Context;
use crate::exit::{invalid, outln};
use herald_cli::json;

/// Exit code of a command whose outcome is unknown (no reply in time).
pub const TIMEOUT: u8 = 3;

/// Arguments of `herald command`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The aggregate's command topic.
    pub topic: String,
    /// Command type: the Avro full name of a schema under --schemas.
    #[arg(long = "type", value_name = "FULL.AVRO.NAME")]
    pub command_type: String,
    /// The aggregate id (the Kafka key).
    #[arg(long)]
    pub key: String,
    /// The command as JSON, or `@FILE`.
    #[arg(long, value_name = "JSON|@FILE")]
    pub data: String,
    /// The aggregate version the command expects (else it is rejected with `conflict`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub expect_version: Option<i64>,
    /// How long to wait for the reply (`500ms`, `10s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = more_than_zero)]
    pub timeout: Duration,
    /// The reply topic (default: the command topic with `.commands` replaced by
    /// `.replies`, or `.replies` appended).
    #[arg(long)]
    pub reply_topic: Option<String>,
    /// CloudEvents source (`ce_source`) of the command.
    #[arg(long, default_value = "/herald/cli")]
    pub source: String,
    /// The command's id (default: a new UUIDv7). After exit 3, send the command again with
    /// the id printed: if the aggregate decided it, the reply it got comes back and nothing
    /// is decided twice, as long as it is among the aggregate's last commands (it remembers
    /// `Aggregate::REMEMBERED`, 64 by default; older ones are decided again). On a busy
    /// aggregate, look it up first (its reply is keyed by the id on the reply topic).
    #[arg(long, value_name = "UUID")]
    pub id: Option<uuid::Uuid>,
}

/// How far before the send the command's dead letter is looked for (the engine stamps it
/// with its own clock).
const DEAD_LETTER_SKEW: Duration = Duration::from_secs(60);

/// A `--timeout` with time to wait in: `0s` would send the command and give up at once,
/// its outcome unknown.
fn more_than_zero(s: &str) -> Result<Duration, String> {
    match herald_ops::parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: the reply needs time to come; give more than 0")),
        d => Ok(d),
    }
}

/// The reply topic of command topic `topic` by default.
///
/// ```ignore
/// assert_eq!(default_reply_topic("shop.accounts.commands"), "shop.accounts.replies");
/// ```
pub fn default_reply_topic(topic: &str) -> String {
    match topic.strip_suffix(".commands") {
        Some(base) => format!("{base}.replies"),
        None => format!("{topic}.replies"),
    }
}

/// The manifest's topic `topic` is (by its name, or after a prefix ending in `.`, as
/// `--topic-prefix` makes them: `t1.shop.accounts.commands` is `shop.accounts.commands`,
/// `myshop.accounts.commands` is not), with the types it carries.
fn declared_types<'m>(manifest: &'m herald_schema::manifest::Manifest, topic: &str) -> Option<(&'m str, &'m [String])> {
    manifest
        .topics
        .iter()
        .filter(|(name, _)| topic == name.as_str() || topic.strip_suffix(name.as_str()).is_some_and(|prefix| prefix.ends_with('.')))
        .max_by_key(|(name, _)| name.len())
        .map(|(name, declared)| (name.as_str(), declared.events.as_slice()))
}

/// Sends the command; the exit code says the outcome.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let schemas = ctx.schemas()?;
    let known = crate::publish::lookup(&schemas, &args.command_type)?.clone();
    // A type the topic does not carry would be dead-lettered by the aggregate, its outcome
    // "unknown" here until the timeout: refused as bad input when the manifest says.
    let manifest = ctx.manifest();
    if let Some((declared, types)) = declared_types(&manifest, &args.topic)
        && !types.contains(&args.command_type)
    {
        invalid!("{} is not a type of {} (the manifest's topic {declared:?} carries {types:?})", args.command_type, args.topic);
    }
    if args.key.is_empty() {
        invalid!("--key is empty: a command names its aggregate");
    }
    let reply_topic = args.reply_topic.clone().unwrap_or_else(|| default_reply_topic(&args.topic));
    // The engine writes no reply to one of the aggregate's own topics (it would drop it):
    // the outcome would be "unknown" for sure.
    if reply_topic == args.topic {
        invalid!("--reply-topic {reply_topic} is the command topic");
    }
    let reply_type = <herald_aggregate::CommandReply as herald_bus::Event>::TYPE;
    if let Some((declared, types)) = declared_types(&manifest, &reply_topic)
        && !types.iter().any(|t| t == reply_type)
    {
        invalid!("--reply-topic {reply_topic} carries no replies (the manifest's topic {declared:?} carries {types:?}, not {reply_type})");
    }
    for topic in [&args.topic, &reply_topic] {
        if let Err(reason) = herald_bus::topic::validate_name(topic) {
            invalid!("{reason}");
        }
        if herald_bus::admin::partition_count(&ctx.kafka, topic).await.context("cannot read cluster metadata")?.is_none() {
            invalid!("topic {topic} does not exist");
        }
    }
    let text = match args.data.strip_prefix('@') {
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => invalid!("--data @{file}: {e}"),
        },
        None => args.data.clone(),
    };
    let value: serde_json::Value = match json::parse(text.as_bytes()) {
        Ok(value) => value,
        Err(e) => invalid!("not JSON: {e}"),
    };
    let datum = match json::encode(&known.schema, &value) {
        Ok(datum) => datum,
        Err(e) => invalid!("{}: {e}", known.name),
    };
    let client = CommandClient::<()>::new(&ctx.kafka, Topic::named(&args.topic), reply_topic).await.context("starting the reply reader")?;
    let publisher = ctx.publisher(&args.source)?;
    let payload = publisher.frame(&args.topic, &known, &datum).await.context("framing the payload")?;
    let mut meta = Metadata::new(&known.name, &args.source, &args.key);
    if let Some(id) = args.id {
        // As CommandClient::send_with does: the command starts its flow.
        meta.id = id;
        meta.correlation_id = Some(id.to_string());
    }
    let record = Record::new(&args.topic, args.key.as_bytes(), payload, meta.to_headers());
    let options = SendOptions { expected_version: args.expect_version, timeout: Some(args.timeout), command_id: None };
    let sent_at = std::time::SystemTime::now();
    // The client's own publisher sends it (it registers the wait first).
    match client.send_record(record, meta.id, options).await {
        Ok(reply) => {
            outln!("{}", serde_json::to_string(&reply).unwrap_or_default());
            Ok(if reply.is_accepted() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        // Whatever the failure, a command that may have been written may be decided: a
        // script must look it up before sending it again, not take it as rejected. Unless
        // the engine dead-lettered it: then it is never decided.
        Err(e) if e.outcome_unknown() => {
            let since = sent_at.checked_sub(DEAD_LETTER_SKEW).unwrap_or(std::time::UNIX_EPOCH);
            match find_dead_letter(&ctx.kafka, &args.topic, e.command_id(), since, Duration::from_secs(10)).await {
                Ok(Some(letter)) => {
                    eprintln!("command {} was dead-lettered ({}/{}@{}), never decided: {}", e.command_id(), letter.topic, letter.partition, letter.offset, letter.reason);
                    outln!(
                        "{}",
                        serde_json::json!({"command_id": e.command_id().to_string(), "outcome": "dead-lettered", "reason": letter.reason, "dead_letter": {"topic": letter.topic, "partition": letter.partition, "offset": letter.offset}})
                    );
                    return Ok(ExitCode::from(1));
                }
                Ok(None) => {}
                Err(lookup) => tracing::warn!(error = %lookup, "could not look for the command's dead letter"),
            }
            eprintln!("{e}");
            eprintln!("{}", serde_json::json!({"command_id": e.command_id().to_string(), "outcome": "unknown"}));
            Ok(ExitCode::from(TIMEOUT))
        }
        Err(e) => Err(anyhow::Error::new(e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_topic_is_the_manifests_by_its_name_or_after_a_prefix() {
        let manifest = herald_schema::manifest::Manifest::parse("[topics.\"shop.accounts.commands\"]\nevents = [\"shop.accounts.Deposit\"]").expect("manifest");
        let declared = |topic| super::declared_types(&manifest, topic).map(|(name, _)| name);
        assert_eq!(declared("shop.accounts.commands"), Some("shop.accounts.commands"));
        assert_eq!(declared("t1.shop.accounts.commands"), Some("shop.accounts.commands"));
        assert_eq!(declared("myshop.accounts.commands"), None, "a prefix ends with a dot");
        assert_eq!(declared("other"), None);
        let nested = herald_schema::manifest::Manifest::parse("[topics.\"shop.accounts.commands\"]\nevents = []\n[topics.\"accounts.commands\"]\nevents = []").expect("manifest");
        assert_eq!(super::declared_types(&nested, "t1.shop.accounts.commands").map(|(name, _)| name), Some("shop.accounts.commands"), "the longest match");
    }

    #[test]
    fn the_default_reply_topic_follows_the_command_topic() {
        assert_eq!(super::default_reply_topic("shop.accounts.commands"), "shop.accounts.replies");
        assert_eq!(super::default_reply_topic("orders"), "orders.replies");
    }
}
