//! `herald publish`: events written as JSON, mapped through their Avro schema.
//!
//! One event from `--data`, or newline-delimited JSON on stdin (one event per line, blank
//! lines skipped). Each published event prints `{"id": ..., "partition": ..., "offset": ...}`
//! on stdout, in input order.
//!
//! Stdin is streamed: lines are sent as they are read, with at most [`MAX_IN_FLIGHT`]
//! records awaiting acknowledgement. A line that does not fit its schema stops the run
//! with exit code 2; the lines before it were published (and printed), none after it.
//!
//! Order: each record is queued with [`Publisher::enqueue`], awaited before the next line
//! is read, so events of one key land in input order (the producer is idempotent); the
//! deliveries are collected afterwards. (Polling many `send_record` futures together, as
//! in `FuturesOrdered`, would let one that has to wait queue after a later one.)

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::stream::{FuturesOrdered, StreamExt};
use herald_bus::publisher::Record;
use herald_bus::schema::{KnownSchema, SchemaSet};
use herald_bus::{Metadata, Publisher};
use tokio::io::AsyncBufReadExt;

use crate::context::Context;
use crate::exit::{invalid, outln, Invalid};
use herald_cli::json;

/// Records awaiting acknowledgement at once when publishing from stdin. When the
/// producer's queue (bounded in bytes) fills up first, queueing waits for it.
pub const MAX_IN_FLIGHT: usize = 1000;

/// Arguments of `herald publish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topic to publish to.
    pub topic: String,
    /// Event type: the Avro full name of a schema under --schemas (its newest version).
    #[arg(long = "type", value_name = "FULL.AVRO.NAME")]
    pub event_type: String,
    /// Kafka key and CloudEvents subject: the aggregate id.
    #[arg(long)]
    pub key: String,
    /// The event as JSON, or `@FILE` to read it from a file. Without it, events are read
    /// from stdin, one JSON object per line.
    #[arg(long, value_name = "JSON|@FILE")]
    pub data: Option<String>,
    /// CloudEvents source (`ce_source`) of the events.
    #[arg(long, default_value = "/herald/cli")]
    pub source: String,
}

/// Publishes the events.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let schemas = ctx.schemas()?;
    let known = lookup(&schemas, &args.event_type)?.clone();
    if let Err(reason) = herald_bus::topic::validate_name(&args.topic) {
        invalid!("{reason}");
    }
    // Fail fast instead of waiting for the producer to give up on a missing topic.
    let partitions = herald_bus::admin::partition_count(&ctx.kafka, &args.topic).await.context("cannot read cluster metadata")?;
    if partitions.is_none() {
        invalid!("topic {} does not exist; create it with `herald topics create {}`", args.topic, args.topic);
    }
    let publisher = ctx.publisher(&args.source)?;
    let encoder = json::JsonEncoder::new(known.schema.clone()).map_err(|e| Invalid(format!("{}: {e}", known.name)))?;
    let sender = Sender { publisher: publisher.clone(), known, encoder, args };
    let result = match &sender.args.data {
        Some(data) => sender.one(data).await,
        None => sender.stdin().await,
    };
    // Dropping a producer purges what it has not delivered: flush first, whatever happened.
    let flushed = publisher.flush(Duration::from_secs(30)).await;
    result?;
    flushed.context("flushing the producer")
}

/// The newest schema named `name`; an error listing the known types otherwise.
pub fn lookup<'a>(schemas: &'a SchemaSet, name: &str) -> anyhow::Result<&'a Arc<KnownSchema>> {
    match schemas.latest(name) {
        Some(known) => Ok(known),
        None => {
            let known: Vec<&str> = schemas.names().iter().map(|k| k.name.as_str()).collect();
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            invalid!("unknown event type {name}; known types: {known}")
        }
    }
}

struct Sender {
    publisher: Publisher,
    known: Arc<KnownSchema>,
    /// `known`'s schema, ready for one JSON text after another.
    encoder: json::JsonEncoder,
    args: Args,
}

impl Sender {
    async fn one(&self, data: &str) -> anyhow::Result<()> {
        let text = match data.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file).map_err(|e| Invalid(format!("--data @{file}: {e}")))?,
            None => data.to_owned(),
        };
        let (id, record) = self.record(&text).await?;
        let (partition, offset) = self.publisher.send_record(record).await.context("publishing")?;
        print_published(id, partition, offset)
    }

    async fn stdin(&self) -> anyhow::Result<()> {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            eprintln!("reading {} events from stdin, one JSON object per line; end with ctrl-d", self.known.name);
        }
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut pending = FuturesOrdered::new();
        let mut failed = 0usize;
        let mut line_no = 0usize;
        let mut stop = None;
        let mut stop_error = None;
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break,
                // Bytes that are not UTF-8 are bad input like JSON that does not fit: the
                // lines before were queued, so they are reported before stopping.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    stop = Some(Invalid(format!("line {}: not UTF-8 text ({e})", line_no + 1)));
                    break;
                }
                Err(e) => {
                    stop_error = Some(anyhow::Error::new(e).context(format!("reading stdin after line {line_no}")));
                    break;
                }
            };
            line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            let (id, record) = match self.record(&line).await {
                Ok(r) => r,
                Err(e) => match e.downcast::<Invalid>() {
                    Ok(invalid) => {
                        stop = Some(Invalid(format!("line {line_no}: {invalid}")));
                        break;
                    }
                    Err(other) => {
                        stop_error = Some(other.context(format!("line {line_no}")));
                        break;
                    }
                },
            };
            while pending.len() >= MAX_IN_FLIGHT {
                failed += report(pending.next().await)?;
            }
            // Queued one at a time, so in input order (see the module docs).
            let queued = self.publisher.enqueue(record).await;
            pending.push_back(async move {
                let result = match queued {
                    Ok(delivery) => delivery.await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (line_no, id, result)
            });
        }
        while let Some(done) = pending.next().await {
            failed += report(Some(done))?;
        }
        if let Some(invalid) = stop {
            return Err(invalid.into());
        }
        if let Some(error) = stop_error {
            return Err(error);
        }
        if failed > 0 {
            anyhow::bail!("{failed} event(s) were not delivered");
        }
        Ok(())
    }

    /// Maps one JSON text to a framed record with fresh metadata. JSON that does not fit
    /// is an [`Invalid`] error naming the type and the field.
    async fn record(&self, text: &str) -> anyhow::Result<(uuid::Uuid, Record)> {
        let name = &self.known.name;
        let value: serde_json::Value = match herald_schema::json::parse(text.as_bytes()) {
            Ok(value) => value,
            Err(e) => invalid!("not JSON: {e}"),
        };
        let datum = match self.encoder.encode(&value) {
            Ok(datum) => datum,
            Err(e) => invalid!("{name}: {e}"),
        };
        let payload = self.publisher.frame(&self.args.topic, &self.known, &datum).await.context("framing the payload")?;
        let meta = Metadata::new(name, &self.args.source, &self.args.key);
        let record = Record::new(&self.args.topic, self.args.key.as_bytes(), payload, meta.to_headers());
        Ok((meta.id, record))
    }
}

/// A finished send from stdin: line number, event id, and where it landed.
type Sent = (usize, uuid::Uuid, Result<(i32, i64), String>);

/// Prints one result; returns 1 if it failed.
fn report(done: Option<Sent>) -> anyhow::Result<usize> {
    match done {
        Some((_, id, Ok((partition, offset)))) => {
            print_published(id, partition, offset)?;
            Ok(0)
        }
        Some((line, id, Err(e))) => {
            eprintln!("error: line {line}: event {id} not delivered: {e}");
            Ok(1)
        }
        None => Ok(0),
    }
}

fn print_published(id: uuid::Uuid, partition: i32, offset: i64) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Published {
        id: uuid::Uuid,
        partition: i32,
        offset: i64,
    }
    let line = Published { id, partition, offset };
    outln!("{}", serde_json::to_string(&line).unwrap_or_default());
    Ok(())
}
