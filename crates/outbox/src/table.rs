//! [`OutboxTable`]: an outbox's table, its buckets, its channel, and [`OutboxTable::ensure_schema`].

use crate::OutboxError;

/// An outbox table and how its aggregates are split among relays.
///
/// Every row belongs to a *bucket*: `murmur2(aggregate id) % buckets`, stored with the
/// row. A relay owns buckets (through PostgreSQL session-level advisory locks) and only it
/// relays their rows, so one aggregate is relayed from one place at a time. The bucket count
/// is recorded with the table; a process configured with another count is refused
/// ([`OutboxError::BucketMismatch`]).
///
/// ```
/// use herald_outbox::OutboxTable;
/// let table = OutboxTable::new("orders_outbox").unwrap().buckets(16).unwrap();
/// assert_eq!(table.channel(), "orders_outbox_ready");
/// assert_eq!(table.bucket_of("order-1"), table.bucket_of("order-1"));
/// assert!(table.bucket_of("order-1") < 16);
/// assert!(OutboxTable::new("Robert'); DROP TABLE students;--").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTable {
    name: String,
    buckets: u32,
}

/// Buckets unless [`OutboxTable::buckets`] says otherwise.
pub const DEFAULT_BUCKETS: u32 = 32;

impl OutboxTable {
    /// The table `name` (1 to 40 of `[a-z0-9_]`, not starting with a digit), with
    /// [`DEFAULT_BUCKETS`] buckets. Its companions are `NAME_buckets` (who relays which
    /// bucket), `NAME_settings` (the bucket count) and the trigger function `NAME_notify`.
    pub fn new(name: &str) -> Result<Self, OutboxError> {
        let valid = !name.is_empty()
            && name.len() <= 40
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(OutboxError::InvalidName(name.to_owned()));
        }
        Ok(OutboxTable { name: name.to_owned(), buckets: DEFAULT_BUCKETS })
    }

    /// Sets the bucket count (1 to 4096): the most relays that can share the work. Fixed
    /// once the table exists.
    pub fn buckets(mut self, buckets: u32) -> Result<Self, OutboxError> {
        if !(1..=4096).contains(&buckets) {
            return Err(OutboxError::InvalidBuckets(buckets));
        }
        self.buckets = buckets;
        Ok(self)
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bucket count.
    pub fn bucket_count(&self) -> u32 {
        self.buckets
    }

    /// The `LISTEN/NOTIFY` channel the insert trigger notifies: `NAME_ready`.
    pub fn channel(&self) -> String {
        format!("{}_ready", self.name)
    }

    /// The bucket of an aggregate: Kafka's murmur2 of its id, modulo the bucket count.
    pub fn bucket_of(&self, aggregate: &str) -> i32 {
        let hash = herald_bus::partitioner::murmur2(aggregate.as_bytes()) & 0x7fff_ffff;
        (hash % self.buckets) as i32
    }

    /// The first key of the transaction-level lock that serializes
    /// [`OutboxTable::ensure_schema`] (the second is -1). Derived from the bare name (the
    /// table may not exist yet), so same-named tables in other schemas of one database
    /// wait for each other there, which is harmless; advisory locks of other databases
    /// never conflict. The same class as earlier versions took, so their `ensure_schema`
    /// and this one still exclude each other. (The relay's bucket and presence locks are
    /// keyed by the table's OID instead: see `relay::ownership`.)
    pub(crate) fn schema_lock_class(&self) -> i32 {
        class_of(&self.name, "buckets")
    }

    /// The first key of the transaction-level locks that serialize one aggregate's
    /// inserts (the second is the aggregate's hash).
    pub(crate) fn aggregate_lock_class(&self) -> i32 {
        class_of(&self.name, "aggregates")
    }

    /// Creates the table, its companions and the notify trigger if they are missing, and
    /// checks the recorded bucket count. The table refuses a row whose `bucket` is not
    /// one of its buckets (`CHECK`, constraint `NAME_bucket_range`): no relay would ever
    /// send it. Safe to call from many processes at once (it
    /// serializes itself with a transaction-level advisory lock).
    pub async fn ensure_schema(&self, client: &mut tokio_postgres::Client) -> Result<(), OutboxError> {
        let t = &self.name;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1, -1)", &[&self.schema_lock_class()]).await?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_id uuid NOT NULL UNIQUE,
                topic text NOT NULL,
                aggregate text NOT NULL,
                bucket integer NOT NULL,
                payload bytea NOT NULL,
                header_names text[] NOT NULL,
                header_values bytea[] NOT NULL,
                created_at timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE INDEX IF NOT EXISTS {t}_bucket_seq ON {t} (bucket, seq);
            CREATE TABLE IF NOT EXISTS {t}_buckets (
                bucket integer PRIMARY KEY,
                owner text,
                released boolean NOT NULL DEFAULT true,
                since timestamptz NOT NULL DEFAULT now(),
                ready_at timestamptz
            );
            ALTER TABLE {t}_buckets ADD COLUMN IF NOT EXISTS ready_at timestamptz;
            CREATE TABLE IF NOT EXISTS {t}_settings (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                buckets integer NOT NULL
            );
            CREATE OR REPLACE FUNCTION {t}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$;
            CREATE OR REPLACE TRIGGER {t}_notify AFTER INSERT ON {t}
                FOR EACH STATEMENT EXECUTE FUNCTION {t}_notify();",
            channel = self.channel()
        ))
        .await?;
        let configured = self.buckets as i32;
        tx.execute(&format!("INSERT INTO {t}_settings (buckets) VALUES ($1) ON CONFLICT DO NOTHING"), &[&configured]).await?;
        let existing: i32 = tx.query_one(&format!("SELECT buckets FROM {t}_settings"), &[]).await?.try_get(0)?;
        if existing != configured {
            return Err(OutboxError::BucketMismatch { table: t.clone(), existing, configured: self.buckets });
        }
        // A row outside the buckets would never be relayed (no relay owns its bucket):
        // refused when written. NOT VALID: rows written before the check are not scanned.
        // Adding it locks the table: on a table in use (the first start after an upgrade)
        // it waits at most 2 s, else it is left for the next start.
        let constraint = format!("{t}_bucket_range");
        let exists = tx.query_opt("SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)", &[&constraint, t]).await?.is_some();
        if !exists {
            tx.batch_execute("SAVEPOINT bucket_range; SET LOCAL lock_timeout = '2s'").await?;
            match tx.batch_execute(&format!("ALTER TABLE {t} ADD CONSTRAINT {constraint} CHECK (bucket >= 0 AND bucket < {configured}) NOT VALID")).await {
                Ok(()) => tx.batch_execute("RELEASE SAVEPOINT bucket_range").await?,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                    tracing::warn!(table = %t, "the table is busy: its bucket check is added at a later start");
                    tx.batch_execute("ROLLBACK TO SAVEPOINT bucket_range").await?;
                }
                Err(e) => return Err(e.into()),
            }
            tx.batch_execute("SET LOCAL lock_timeout = 0").await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A stable, non-negative 31-bit lock class for `table` and `purpose` (FNV-1a).
pub(crate) fn class_of(table: &str, purpose: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in table.bytes().chain(std::iter::once(b'/')).chain(purpose.bytes()) {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash & 0x7fff_ffff) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_classes_differ() {
        for bad in ["", "1abc", "Orders", "a-b", "a b", &"x".repeat(41)] {
            assert!(OutboxTable::new(bad).is_err(), "{bad}");
        }
        let t = OutboxTable::new("orders_outbox").expect("valid");
        let classes = [t.schema_lock_class(), t.aggregate_lock_class()];
        assert!(classes.iter().all(|c| *c >= 0));
        assert_ne!(classes[0], classes[1]);
        assert!(t.clone().buckets(0).is_err());
        let spread: std::collections::HashSet<i32> = (0..1000).map(|i| t.bucket_of(&format!("order-{i}"))).collect();
        assert_eq!(spread.len(), DEFAULT_BUCKETS as usize, "aggregates spread over every bucket");
    }
}
