//! [`RelayOptions`]: how a relay runs, with documented defaults.

use std::time::Duration;

use super::FaultHook;

/// Settings of a [`Relay`](super::Relay).
#[derive(Clone)]
pub struct RelayOptions {
    /// This relay's name in the `NAME_buckets` table (default: `relay-` and a random id).
    /// A relay that finds a bucket last held by another instance that did not release it
    /// waits [`RelayOptions::takeover_delay`] before relaying it.
    pub instance: String,
    /// Rows read and sent per batch (default 1000).
    pub batch_size: i64,
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
    pub takeover_delay: Duration,
    /// Longest wait between reconnection attempts (default 5 s; backoff doubles from
    /// 100 ms).
    pub max_backoff: Duration,
    /// Called at each step of a batch (fault tests); `None` by default.
    pub fault: Option<FaultHook>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        let delivery_timeout = Duration::from_secs(30);
        RelayOptions {
            instance: format!("relay-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            batch_size: 1000,
            poll_interval: Duration::from_secs(1),
            rebalance_interval: Duration::from_secs(2),
            delivery_timeout,
            takeover_delay: delivery_timeout + Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            fault: None,
        }
    }
}

impl std::fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOptions")
            .field("instance", &self.instance)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("rebalance_interval", &self.rebalance_interval)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("takeover_delay", &self.takeover_delay)
            .field("fault", &self.fault.is_some())
            .finish()
    }
}
