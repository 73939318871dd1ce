//! [`RelayOptions`]: how a relay runs, with documented defaults.

use std::time::Duration;

use super::FaultHook;
use crate::OutboxError;

/// Settings of a [`Relay`](super::Relay).
#[derive(Clone)]
pub struct RelayOptions {
    /// This relay's name in the `NAME_buckets` table (default: `relay-` and a random id).
    /// A relay that finds a bucket last held by another instance that did not release it
    /// waits [`RelayOptions::takeover_delay`] before relaying it; one last held under its
    /// own name it takes at once (its own restart). So the name must be unique among the
    /// table's relays: two relays of one name skip that delay for each other.
    pub instance: String,
    /// Rows read and sent per batch (default 1000; at least 1).
    pub batch_size: i64,
    /// Payload bytes read per batch (default 16 MiB; at least 1): a batch ends with the
    /// row that reaches this many bytes of payload, so it holds at most this plus one
    /// row (always at least one row, whatever its size).
    pub batch_bytes: i64,
    /// How often the relay looks for rows without a notification (default 1 s): the
    /// fallback when a `NOTIFY` is missed (for example while reconnecting).
    pub poll_interval: Duration,
    /// How often the relay recounts the relays and takes or gives up buckets (default 2 s).
    pub rebalance_interval: Duration,
    /// The producer's `message.timeout.ms` (default 30 s): a send not acknowledged by
    /// then fails (its row stays and is sent again).
    pub delivery_timeout: Duration,
    /// How long a relay waits before relaying a bucket whose previous owner vanished
    /// without releasing it (default: `delivery_timeout` + 5 s): that owner's sends, if
    /// it still lives, have ended by then, so two relays never send one aggregate at once.
    /// Must be longer than `delivery_timeout`. A PostgreSQL restart ends every relay's
    /// session at once, so each looks vanished to the others: a bucket retaken by another
    /// relay than its last owner waits this long too (`/health` counts those as
    /// `waiting_buckets`).
    pub takeover_delay: Duration,
    /// Longest wait between reconnection attempts (default 5 s; backoff doubles from
    /// 100 ms), and between retries of a held aggregate's failed row (doubles from
    /// 200 ms; see [the relay's docs](super#failed-rows-held-aggregates)).
    pub max_backoff: Duration,
    /// Longest wait for PostgreSQL to answer one of the relay's statements (default
    /// 30 s): a session whose statement takes longer is dropped (its backend terminated by
    /// the next session) and the relay reconnects. Catches what TCP timeouts do not: a
    /// frozen server, a proxy that keeps the connection up, a statement waiting on a lock.
    pub statement_timeout: Duration,
    /// Called at each step of a batch (fault tests); `None` by default.
    pub fault: Option<FaultHook>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        let delivery_timeout = Duration::from_secs(30);
        RelayOptions {
            instance: format!("relay-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            batch_size: 1000,
            batch_bytes: 16 << 20,
            poll_interval: Duration::from_secs(1),
            rebalance_interval: Duration::from_secs(2),
            delivery_timeout,
            takeover_delay: delivery_timeout + Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            fault: None,
        }
    }
}

impl RelayOptions {
    /// Checks the settings ([`Relay::new`](super::Relay::new) does): `batch_size` and
    /// `batch_bytes` at least 1 (0 would read nothing forever, a negative size PostgreSQL
    /// refuses as a `LIMIT`); `delivery_timeout`, `poll_interval`, `rebalance_interval`,
    /// `max_backoff` and `statement_timeout` above zero (librdkafka reads a zero `message.timeout.ms` as no
    /// timeout; zero intervals spin); `takeover_delay` longer than `delivery_timeout`
    /// (else a vanished owner's sends may still be in flight when the next owner starts).
    pub fn validate(&self) -> Result<(), OutboxError> {
        let refuse = |option, reason: String| Err(OutboxError::InvalidOption { option, reason });
        if self.batch_size < 1 {
            return refuse("batch_size", format!("{} rows; use 1 or more", self.batch_size));
        }
        if self.batch_bytes < 1 {
            return refuse("batch_bytes", format!("{} bytes; use 1 or more", self.batch_bytes));
        }
        let positive = [
            ("delivery_timeout", self.delivery_timeout),
            ("poll_interval", self.poll_interval),
            ("rebalance_interval", self.rebalance_interval),
            ("max_backoff", self.max_backoff),
            ("statement_timeout", self.statement_timeout),
        ];
        for (option, value) in positive {
            if value.is_zero() {
                return refuse(option, "zero; use a positive duration".to_owned());
            }
        }
        if self.takeover_delay <= self.delivery_timeout {
            return refuse(
                "takeover_delay",
                format!("{:?} is not longer than delivery_timeout ({:?})", self.takeover_delay, self.delivery_timeout),
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOptions")
            .field("instance", &self.instance)
            .field("batch_size", &self.batch_size)
            .field("batch_bytes", &self.batch_bytes)
            .field("poll_interval", &self.poll_interval)
            .field("rebalance_interval", &self.rebalance_interval)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("takeover_delay", &self.takeover_delay)
            .field("max_backoff", &self.max_backoff)
            .field("statement_timeout", &self.statement_timeout)
            .field("fault", &self.fault.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Relay;
    use crate::OutboxTable;

    fn refusal(options: RelayOptions) -> Option<String> {
        let table = OutboxTable::new("t_options").expect("a valid name");
        Relay::new(tokio_postgres::Config::new(), table, &herald_bus::KafkaConfig::new("127.0.0.1:9"), options).err().map(|e| e.to_string())
    }

    #[test]
    fn settings_a_relay_cannot_run_with_are_refused() {
        let defaults = RelayOptions::default;
        let second = Duration::from_secs(1);
        let bad = [
            ("batch_size", RelayOptions { batch_size: 0, ..defaults() }),
            ("batch_size", RelayOptions { batch_size: -5, ..defaults() }),
            ("batch_bytes", RelayOptions { batch_bytes: 0, ..defaults() }),
            ("takeover_delay", RelayOptions { takeover_delay: defaults().delivery_timeout, ..defaults() }),
            ("takeover_delay", RelayOptions { delivery_timeout: 60 * second, ..defaults() }),
            ("delivery_timeout", RelayOptions { delivery_timeout: Duration::ZERO, ..defaults() }),
            ("poll_interval", RelayOptions { poll_interval: Duration::ZERO, ..defaults() }),
            ("rebalance_interval", RelayOptions { rebalance_interval: Duration::ZERO, ..defaults() }),
            ("max_backoff", RelayOptions { max_backoff: Duration::ZERO, ..defaults() }),
            ("statement_timeout", RelayOptions { statement_timeout: Duration::ZERO, ..defaults() }),
        ];
        for (option, options) in bad {
            let refused = refusal(options.clone()).unwrap_or_else(|| panic!("{options:?} accepted"));
            assert!(refused.contains(option), "{refused}");
            match options.validate() {
                Err(OutboxError::InvalidOption { option: named, .. }) => assert_eq!(named, option),
                other => panic!("{options:?}: {other:?}"),
            }
        }
        assert_eq!(refusal(defaults()), None);
        let smallest = RelayOptions { batch_size: 1, batch_bytes: 1, delivery_timeout: second, takeover_delay: second + Duration::from_millis(1), ..defaults() };
        assert_eq!(refusal(smallest), None);
    }
}
