//! [`Session`]: a relay's PostgreSQL session, the buckets it owns through session-level
//! advisory locks, and its share of them.
//!
//! Each relay holds one *presence* lock while it runs, so every relay can count the
//! relays of its table: its fair share is `ceil(buckets / relays)`. It takes free buckets
//! with `pg_try_advisory_lock` up to its share, and gives up buckets over it, between
//! batches (nothing of theirs is in flight then), marking them `released` in
//! `NAME_buckets` first. PostgreSQL drops every lock of a session that ends (a relay
//! killed, its connection cut, the server restarted), so a dead relay's buckets become
//! free by themselves; a bucket taken without its `released` mark from another relay
//! waits `takeover_delay` before it is relayed (its previous owner may still be finishing
//! sends it started). That wait is recorded as the bucket's `ready_at` and kept when the
//! bucket is released or taken again (by this relay after a reconnect, or by another), so
//! nobody relays the bucket before it.
//!
//! The locks are keyed by the table's OID ([`Keys`]), and only locks of the session's
//! own database are counted, so relays of same-named tables in other databases or
//! schemas of the server neither count as sharing this table nor hold its buckets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::{Client, Config};

use crate::connect::connect_listening;
use crate::OutboxTable;

/// The advisory lock keys of one outbox table: single `bigint` keys whose high 32 bits
/// are the table's OID (unique in its database; advisory locks of other databases never
/// conflict) and whose low 32 bits are a bucket (0 to 4095) or, for a presence lock,
/// 2^31 plus a random 31-bit number.
#[derive(Debug, Clone, Copy)]
struct Keys {
    table: u32,
}

/// Low halves of presence keys start here; bucket keys are below it.
const PRESENCE: i64 = 1 << 31;

impl Keys {
    /// The keys of the table the session's `search_path` resolves `table` to.
    async fn of(client: &Client, table: &OutboxTable) -> Result<Self, tokio_postgres::Error> {
        let oid: u32 = client.query_one("SELECT $1::text::regclass::oid", &[&table.name()]).await?.try_get(0)?;
        Ok(Keys { table: oid })
    }

    fn base(self) -> i64 {
        i64::from(self.table) << 32
    }

    fn bucket(self, bucket: i32) -> i64 {
        self.base() | i64::from(bucket)
    }

    fn presence(self, random: u32) -> i64 {
        self.base() | PRESENCE | i64::from(random & 0x7fff_ffff)
    }
}

/// A relay's session: its connection, notifications and buckets.
pub(crate) struct Session {
    pub client: Client,
    pub woken: Arc<Notify>,
    table: OutboxTable,
    keys: Keys,
    instance: String,
    /// Owned buckets, and when each may be relayed.
    owned: BTreeMap<i32, Instant>,
}

impl Session {
    /// Connects, listens on the table's channel and registers as a relay.
    pub async fn open(config: &Config, table: &OutboxTable, instance: &str) -> Result<Self, tokio_postgres::Error> {
        // Named, so operators (and tests) find the relays in pg_stat_activity.
        let mut config = config.clone();
        config.application_name(format!("herald-outbox-relay {instance}"));
        let (client, woken) = connect_listening(&config).await?;
        client.batch_execute(&format!("LISTEN {}", table.channel())).await?;
        let keys = Keys::of(&client, table).await?;
        loop {
            let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&keys.presence(rand::random())]).await?.try_get(0)?;
            if locked {
                break;
            }
        }
        Ok(Session { client, woken, table: table.clone(), keys, instance: instance.to_owned(), owned: BTreeMap::new() })
    }

    /// Buckets owned and past their takeover delay at `now`, in order.
    pub fn ready(&self, now: Instant) -> Vec<i32> {
        self.owned.iter().filter(|(_, at)| **at <= now).map(|(b, _)| *b).collect()
    }

    /// When the next owned bucket becomes ready, if one is waiting.
    pub fn next_ready(&self, now: Instant) -> Option<Instant> {
        self.owned.values().copied().filter(|at| *at > now).min()
    }

    /// Whether this session owns `bucket`.
    pub fn owns(&self, bucket: i32) -> bool {
        self.owned.contains_key(&bucket)
    }

    /// Buckets owned.
    pub fn owned(&self) -> usize {
        self.owned.len()
    }

    /// Counts the relays and takes or gives up buckets to reach this relay's share.
    pub async fn rebalance(&mut self, takeover_delay: Duration) -> Result<(), tokio_postgres::Error> {
        let t = self.table.name();
        // A bigint key shows as classid (high half) and objid (low half), objsubid 1.
        let relays: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = $1 AND objid::bigint >= $2",
                &[&self.keys.table, &PRESENCE],
            )
            .await?
            .try_get(0)?;
        let buckets = self.table.bucket_count() as usize;
        let share = buckets.div_ceil(relays.max(1) as usize);
        while self.owned.len() > share {
            let Some((&bucket, _)) = self.owned.iter().next_back() else { break };
            self.client
                .execute(&format!("UPDATE {t}_buckets SET owner = NULL, released = true, since = now() WHERE bucket = $1"), &[&bucket])
                .await?;
            self.client.execute("SELECT pg_advisory_unlock($1)", &[&self.keys.bucket(bucket)]).await?;
            self.owned.remove(&bucket);
            tracing::info!(bucket, share, relays, "bucket released");
        }
        if self.owned.len() < share {
            let want = (share - self.owned.len()) as i64;
            let owned: Vec<i32> = self.owned.keys().copied().collect();
            // Start at a point of this relay's own, so relays starting together spread out.
            let start = (rand::random::<u32>() % self.table.bucket_count()) as i32;
            let taken = self
                .client
                .query(
                    // CASE fixes the order (AND does not): a bucket owned already must
                    // not be locked a second time, or one unlock would not free it.
                    "SELECT b FROM (SELECT (s + $4) % $1 AS b FROM generate_series(0, $1 - 1) s) free
                     WHERE CASE WHEN b = ANY($2) THEN false ELSE pg_try_advisory_lock($3::bigint + b) END LIMIT $5",
                    &[&(buckets as i32), &owned, &self.keys.base(), &start, &want],
                )
                .await?;
            for row in taken {
                let bucket: i32 = row.try_get(0)?;
                // A bucket neither released nor last owned by this relay (an earlier
                // session of it) was taken from a relay that vanished: it is ready
                // `takeover_delay` from now. A later `ready_at` (a wait owed to an
                // earlier vanished owner) stays, whoever takes the bucket.
                let wait: Option<f64> = self
                    .client
                    .query_one(
                        &format!(
                            "INSERT INTO {t}_buckets AS b (bucket, owner, released, since) VALUES ($1, $2, false, now())
                             ON CONFLICT (bucket) DO UPDATE SET owner = $2, released = false, since = now(),
                                 ready_at = CASE WHEN b.released OR b.owner IS NOT DISTINCT FROM $2 THEN b.ready_at
                                                 ELSE greatest(b.ready_at, now() + make_interval(secs => $3)) END
                             RETURNING extract(epoch FROM ready_at - now())::float8"
                        ),
                        &[&bucket, &self.instance, &takeover_delay.as_secs_f64()],
                    )
                    .await?
                    .try_get(0)?;
                let wait = match wait {
                    Some(seconds) if seconds > 0.0 => Duration::try_from_secs_f64(seconds).unwrap_or(takeover_delay),
                    _ => Duration::ZERO,
                };
                tracing::info!(bucket, share, relays, wait_ms = wait.as_millis() as u64, "bucket taken");
                self.owned.insert(bucket, Instant::now() + wait);
            }
        }
        Ok(())
    }

    /// Gives up every bucket (orderly shutdown), marking them released.
    pub async fn release_all(&mut self) -> Result<(), tokio_postgres::Error> {
        let t = self.table.name();
        let buckets: Vec<i32> = self.owned.keys().copied().collect();
        self.client
            .execute(&format!("UPDATE {t}_buckets SET owner = NULL, released = true, since = now() WHERE bucket = ANY($1)"), &[&buckets])
            .await?;
        self.client.batch_execute("SELECT pg_advisory_unlock_all()").await?;
        self.owned.clear();
        Ok(())
    }
}
