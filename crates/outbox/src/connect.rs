//! Connecting to PostgreSQL: the connection's task, and the notifications it receives.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::OutboxError;

/// Parses a PostgreSQL URL (`postgres://user@host:port/db`) and sets what Herald's clients
/// need, so a server that vanished is noticed: a connect timeout, TCP keepalives (an idle
/// connection, or one waiting for an answer, is probed after 10 s and dropped after three
/// unanswered probes) and a TCP user timeout of 20 s (a connection whose sent data stays
/// unacknowledged that long is dropped: keepalives do not probe while data is in flight,
/// and retransmissions alone take the kernel about 15 minutes to give up).
///
/// TLS is not supported here yet (plain TCP); see the crate's README.
pub fn config(url: &str) -> Result<Config, OutboxError> {
    let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| OutboxError::Url(e.to_string()))?;
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(20));
    Ok(config)
}

/// Connects and drives the connection on its own task. The client's calls fail with a
/// closed-connection error once the connection ends ([`Client::is_closed`]).
pub async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    Ok(connect_listening(config).await?.0)
}

/// Connects; the returned [`Notify`] is signalled for every notification the connection
/// receives (after a `LISTEN`) and when the connection ends.
pub(crate) async fn connect_listening(config: &Config) -> Result<(Client, Arc<Notify>), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let woken = Arc::new(Notify::new());
    let signal = woken.clone();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => signal.notify_one(),
                Ok(AsyncMessage::Notice(notice)) => tracing::debug!(%notice, "postgres notice"),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "postgres connection ended");
                    break;
                }
            }
        }
        signal.notify_one();
    });
    Ok((client, woken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_connection_is_noticed_also_with_data_in_flight() {
        let config = config("postgres://herald@127.0.0.1:55432/herald").expect("a valid URL");
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
        assert!(config.get_keepalives());
    }
}
