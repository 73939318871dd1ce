//! [`Outbox`]: adds events to the outbox table inside the caller's transaction.

use std::sync::Arc;

use herald_bus::codec::{Codec, SingleObject};
use herald_bus::event::Member;
use herald_bus::publisher::encode_datum;
use herald_bus::trace::TraceContext;
use herald_bus::{Event, EventFamily, Metadata, Topic};
use rdkafka::message::Headers;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::{OutboxError, OutboxTable};

/// Writes events into an outbox table, inside the caller's PostgreSQL transaction.
///
/// The row holds the record exactly as the bus's publisher would send it: the key (the
/// aggregate id), the value (Avro single-object encoding) and the CloudEvents headers, with
/// the event id fixed now. The relay sends those bytes unchanged, so a row published twice
/// (a relay crashed between the broker's acknowledgement and the row's deletion) carries the
/// same `ce_id` both times and consumers dedupe it.
///
/// The event is in the outbox if and only if the transaction commits: a rollback takes it
/// back with the rest of the caller's changes.
///
/// ```no_run
/// # herald_bus::family! { #[derive(Debug)] pub enum OrderEvent { Placed(OrderPlaced) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct OrderPlaced { order_id: String }
/// # impl herald_bus::Event for OrderPlaced { const TYPE: &'static str = "shop.orders.OrderPlaced"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.order_id } }
/// # async fn run(client: &mut tokio_postgres::Client) -> Result<(), herald_outbox::OutboxError> {
/// use herald_outbox::{Outbox, OutboxTable};
/// const ORDERS: herald_bus::Topic<OrderEvent> = herald_bus::Topic::new("shop.orders");
///
/// let outbox = Outbox::new(OutboxTable::new("shop_outbox")?, "/shop/checkout");
/// let tx = client.transaction().await?;
/// tx.execute("INSERT INTO orders (id) VALUES ($1)", &[&"o-1"]).await?;
/// outbox.publish(&tx, &ORDERS, &OrderPlaced { order_id: "o-1".into() }).await?;
/// tx.commit().await?; // the order and its event, or neither
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Outbox {
    table: OutboxTable,
    source: Arc<str>,
    max_bytes: usize,
    insert: Arc<str>,
}

/// Parameter types of the insert, declared so it runs in one round trip (no prepare).
const INSERT_TYPES: [Type; 10] = [
    Type::INT4,
    Type::INT4,
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::BYTEA,
    Type::TEXT_ARRAY,
    Type::BYTEA_ARRAY,
    Type::INT4,
];

impl Outbox {
    /// An outbox writing to `table`, with `source` as the CloudEvents source of its
    /// events. Create the table first with [`OutboxTable::ensure_schema`].
    pub fn new(table: OutboxTable, source: impl Into<String>) -> Self {
        // The transaction-level lock on the aggregate serializes inserts of one aggregate
        // until their transactions end, so its rows' `seq` follows commit order: the relay,
        // which sends in `seq` order, then sends an aggregate's events in commit order.
        // Nothing is inserted when the table was made with another bucket count ($10):
        // the row's bucket would be one no relay hashes its aggregate to (see `publish_with`).
        let insert = format!(
            "WITH locked AS (SELECT pg_advisory_xact_lock($1, $2))
             INSERT INTO {t} (event_id, topic, aggregate, bucket, payload, header_names, header_values)
             SELECT $3, $4, $5, $6, $7, $8, $9 FROM locked
             WHERE NOT EXISTS (SELECT 1 FROM {t}_settings WHERE buckets <> $10)",
            t = table.name()
        );
        Outbox { table, source: source.into().into(), max_bytes: 1_000_000, insert: insert.into() }
    }

    /// Largest record (key, value and headers) accepted, in bytes; default 1 000 000.
    ///
    /// Keep it at most what the relay can send: its producer's `message.max.bytes` (the
    /// [`KafkaConfig`](herald_bus::KafkaConfig) given to
    /// [`Relay::new`](crate::relay::Relay::new); default 1 048 588, Kafka's own, counted
    /// the same way)
    /// and the topic's `max.message.bytes` (default about 1 MB). The relay cannot send a
    /// row over either: it holds that row's aggregate back (only that one; the others go
    /// on), retries the row, and reports unhealthy until the limit is raised or the row
    /// deleted (see [the relay's docs](crate::relay#failed-rows-held-aggregates)).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The table this outbox writes to.
    pub fn table(&self) -> &OutboxTable {
        &self.table
    }

    /// Fresh metadata for `event`: a new UUIDv7 id, now, subject = aggregate id, this
    /// outbox's source, a child of the current trace if any (what [`Outbox::publish`] uses).
    pub fn metadata_for<E: Event>(&self, event: &E) -> Metadata {
        let mut meta = Metadata::new(E::TYPE, &*self.source, event.aggregate_id());
        meta.trace = TraceContext::current().map(|t| t.child());
        meta
    }

    /// Adds `event` for `topic` to the outbox in `tx`, with fresh metadata; returns its
    /// event id (`ce_id`).
    ///
    /// Waits while another open transaction holds an event of the same aggregate (see the
    /// crate docs: that keeps an aggregate's events in commit order). Cancellation: dropping
    /// the future leaves the transaction in an unknown state; roll it back.
    pub async fn publish<F, E>(&self, tx: &Transaction<'_>, topic: &Topic<F>, event: &E) -> Result<Uuid, OutboxError>
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        self.publish_with(tx, topic, event, self.metadata_for(event)).await
    }

    /// [`Outbox::publish`] with the given metadata (for example [`Metadata::caused_by`] the
    /// event being handled). `meta.id` must be new, one id per event, never reused: the
    /// table refuses an id that is still waiting in it, but the relay deletes rows once
    /// sent, so an id reused after its first event was relayed is accepted and reaches the
    /// topic twice on two different events (and an [`Inbox`](crate::Inbox), which knows an
    /// event by its id, applies only the first). [`Outbox::metadata_for`] makes fresh ids.
    pub async fn publish_with<F, E>(&self, tx: &Transaction<'_>, topic: &Topic<F>, event: &E, meta: Metadata) -> Result<Uuid, OutboxError>
    where
        F: EventFamily + Member<E>,
        E: Event,
    {
        // As the publisher: consumers dead-letter a record whose ce_type is not its payload's.
        if meta.event_type != E::TYPE {
            return Err(OutboxError::Encode(format!("the metadata's type {:?} is not the event's, {} (ce_type is its schema's full name)", meta.event_type, E::TYPE)));
        }
        let known = F::schemas().latest(E::TYPE).ok_or_else(|| OutboxError::UnknownSchema(E::TYPE.to_owned()))?;
        let mut payload = Vec::with_capacity(256);
        let framing = SingleObject::new(Default::default());
        match framing.write_header_now(topic.name(), known, &mut payload) {
            Some(written) => written.map_err(|e| OutboxError::Encode(e.to_string()))?,
            None => framing.write_header(topic.name(), known, &mut payload).await.map_err(|e| OutboxError::Encode(e.to_string()))?,
        }
        encode_datum(known, event, &mut payload).map_err(|e| OutboxError::Encode(e.to_string()))?;
        let headers = meta.to_headers();
        let mut names = Vec::with_capacity(headers.count());
        let mut values = Vec::with_capacity(headers.count());
        for header in headers.iter() {
            names.push(header.key.to_owned());
            values.push(header.value.map(<[u8]>::to_vec));
        }
        let aggregate = event.aggregate_id();
        let size = aggregate.len() + payload.len() + names.iter().zip(&values).map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len) + 8).sum::<usize>();
        if size > self.max_bytes {
            return Err(OutboxError::Oversize { size, limit: self.max_bytes });
        }
        let aggregate_hash = (herald_bus::partitioner::murmur2(aggregate.as_bytes()) & 0x7fff_ffff) as i32;
        let bucket = self.table.bucket_of(aggregate);
        let topic_name = topic.name();
        let buckets = self.table.bucket_count() as i32;
        let inserted = tx.execute_typed(
            &self.insert,
            &[
                (&self.table.aggregate_lock_class(), INSERT_TYPES[0].clone()),
                (&aggregate_hash, INSERT_TYPES[1].clone()),
                (&meta.id, INSERT_TYPES[2].clone()),
                (&topic_name, INSERT_TYPES[3].clone()),
                (&aggregate, INSERT_TYPES[4].clone()),
                (&bucket, INSERT_TYPES[5].clone()),
                (&payload, INSERT_TYPES[6].clone()),
                (&names, INSERT_TYPES[7].clone()),
                (&values, INSERT_TYPES[8].clone()),
                (&buckets, INSERT_TYPES[9].clone()),
            ],
        )
        .await?;
        if inserted == 0 {
            // Checked in the insert, not once per process: the relays hash aggregates by
            // the table's count, so a row bucketed by another would never be relayed (or
            // one aggregate's rows would sit in two buckets, relayed from two places).
            let existing: i32 = tx.query_one(&format!("SELECT buckets FROM {}_settings", self.table.name()), &[]).await?.try_get(0)?;
            return Err(OutboxError::BucketMismatch { table: self.table.name().to_owned(), existing, configured: self.table.bucket_count() });
        }
        Ok(meta.id)
    }
}
