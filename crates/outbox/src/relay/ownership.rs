//! [`Session`]: a relay's PostgreSQL session, the buckets it owns through session-level
//! advisory locks, and its share of them.
//!
//! Each relay holds one *presence* lock (`presence class`, a random key) while it runs,
//! so every relay can count the relays: its fair share is `ceil(buckets / relays)`. It
//! takes free buckets with `pg_try_advisory_lock(bucket class, bucket)` up to its share,
//! and gives up buckets over it, between batches (nothing of theirs is in flight then),
//! marking them `released` in `NAME_buckets` first. PostgreSQL drops every lock of a
//! session that ends (a relay killed, its connection cut, the server restarted), so a
//! dead relay's buckets become free by themselves; a bucket taken without its `released`
//! mark waits `takeover_delay` before it is relayed (its previous owner may still be
//! finishing sends it started).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::{Client, Config};

use crate::connect::connect_listening;
use crate::OutboxTable;

/// A relay's session: its connection, notifications and buckets.
pub(crate) struct Session {
    pub client: Client,
    pub woken: Arc<Notify>,
    table: OutboxTable,
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
        let class = table.presence_lock_class();
        loop {
            let key: i32 = rand::random::<i32>() & 0x7fff_ffff;
            let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&class, &key]).await?.try_get(0)?;
            if locked {
                break;
            }
        }
        Ok(Session { client, woken, table: table.clone(), instance: instance.to_owned(), owned: BTreeMap::new() })
    }

    /// Buckets owned and past their takeover delay at `now`.
    pub fn ready(&self, now: Instant) -> Vec<i32> {
        self.owned.iter().filter(|(_, at)| **at <= now).map(|(b, _)| *b).collect()
    }

    /// When the next owned bucket becomes ready, if one is waiting.
    pub fn next_ready(&self, now: Instant) -> Option<Instant> {
        self.owned.values().copied().filter(|at| *at > now).min()
    }

    /// Buckets owned.
    pub fn owned(&self) -> usize {
        self.owned.len()
    }

    /// Counts the relays and takes or gives up buckets to reach this relay's share.
    pub async fn rebalance(&mut self, takeover_delay: Duration) -> Result<(), tokio_postgres::Error> {
        let t = self.table.name();
        let relays: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = $1::bigint",
                &[&i64::from(self.table.presence_lock_class())],
            )
            .await?
            .try_get(0)?;
        let buckets = self.table.bucket_count() as usize;
        let share = buckets.div_ceil(relays.max(1) as usize);
        let class = self.table.bucket_lock_class();
        while self.owned.len() > share {
            let Some((&bucket, _)) = self.owned.iter().next_back() else { break };
            self.client
                .execute(&format!("UPDATE {t}_buckets SET owner = NULL, released = true, since = now() WHERE bucket = $1"), &[&bucket])
                .await?;
            self.client.execute("SELECT pg_advisory_unlock($1, $2)", &[&class, &bucket]).await?;
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
                     WHERE CASE WHEN b = ANY($2) THEN false ELSE pg_try_advisory_lock($3, b) END LIMIT $5",
                    &[&(buckets as i32), &owned, &class, &start, &want],
                )
                .await?;
            for row in taken {
                let bucket: i32 = row.try_get(0)?;
                let previous = self
                    .client
                    .query_opt(&format!("SELECT owner, released FROM {t}_buckets WHERE bucket = $1"), &[&bucket])
                    .await?;
                let clean = match &previous {
                    None => true,
                    Some(row) => row.try_get::<_, bool>(1)? || row.try_get::<_, Option<String>>(0)?.as_deref() == Some(self.instance.as_str()),
                };
                self.client
                    .execute(
                        &format!(
                            "INSERT INTO {t}_buckets (bucket, owner, released, since) VALUES ($1, $2, false, now())
                             ON CONFLICT (bucket) DO UPDATE SET owner = $2, released = false, since = now()"
                        ),
                        &[&bucket, &self.instance],
                    )
                    .await?;
                let ready = if clean { Instant::now() } else { Instant::now() + takeover_delay };
                tracing::info!(bucket, share, relays, clean, "bucket taken");
                self.owned.insert(bucket, ready);
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
