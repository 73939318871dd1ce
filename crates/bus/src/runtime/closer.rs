//! The consumer's client, closed on a thread of its own when its last holder lets go.
//!
//! Dropping a group member's client closes it: librdkafka leaves the group, which waits
//! for the group coordinator, and rdkafka's drop waits for the close without a deadline
//! (confluentinc/librdkafka#3740). While no broker answers, that is for ever. The last
//! holder may be anyone: the runtime's orderly shutdown, or, when the runtime is dropped
//! without it (a panic, a `select!` that lost, a `main` that returned), a partition
//! worker dropped by the tokio runtime's own shutdown. Closing on a thread of its own
//! keeps that wait from holding the tokio runtime, and so the program, from ending; the
//! thread ends with the process. The orderly shutdown waits for the close ([`Closed`])
//! up to a deadline.

use std::ops::Deref;

use tokio::sync::oneshot;

use super::worker::Client;

/// Owns a client and closes it on a thread of its own when dropped (see the
/// [module docs](self)).
pub(crate) struct Closer<T: Send + 'static> {
    /// `None` only while dropped.
    client: Option<T>,
    closed: Option<oneshot::Sender<()>>,
}

/// Completes once the client of its [`Closer`] is closed (or its closing thread failed).
pub(crate) struct Closed(oneshot::Receiver<()>);

impl Closed {
    /// Waits for the close.
    pub(crate) async fn wait(self) {
        let _ = self.0.await;
    }
}

impl<T: Send + 'static> Closer<T> {
    pub(crate) fn new(client: T) -> (Self, Closed) {
        let (tx, rx) = oneshot::channel();
        (Closer { client: Some(client), closed: Some(tx) }, Closed(rx))
    }
}

impl<T: Send + 'static> Deref for Closer<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Taken only by `drop`, after which nobody derefs.
        self.client.as_ref().expect("the client is taken only when its closer is dropped")
    }
}

impl<T: Send + 'static> Drop for Closer<T> {
    fn drop(&mut self) {
        let (client, closed) = (self.client.take(), self.closed.take());
        let close = move || {
            drop(client);
            if let Some(closed) = closed {
                let _ = closed.send(());
            }
        };
        // When no thread can start, the closure (and the client) is dropped here.
        if let Err(e) = std::thread::Builder::new().name("herald-consumer-close".into()).spawn(close) {
            tracing::warn!(error = %e, "cannot start a thread to close the consumer: closed where it was dropped");
        }
    }
}

impl<C: Client> Client for Closer<C> {
    fn store_completed(&self, topic: &str, partition: i32, completed: i64) {
        (**self).store_completed(topic, partition, completed);
    }

    fn pause_partition(&self, topic: &str, partition: i32) {
        (**self).pause_partition(topic, partition);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::Closer;

    /// A client whose close blocks until told to end.
    struct Stuck(mpsc::Receiver<()>);

    impl Drop for Stuck {
        fn drop(&mut self) {
            let _ = self.0.recv();
        }
    }

    #[tokio::test]
    async fn a_client_whose_close_blocks_is_closed_without_holding_its_dropper() {
        let (release, stuck) = mpsc::channel();
        let (closer, closed) = Closer::new(Stuck(stuck));
        // Returns although the close blocks.
        drop(closer);
        let mut closed = Box::pin(closed.wait());
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut closed).await.is_err(), "closed while its close still blocks");
        release.send(()).expect("the closing thread waits");
        tokio::time::timeout(Duration::from_secs(10), closed).await.expect("closed once its close ended");
    }

    #[test]
    fn the_client_is_reached_through_its_closer() {
        let (closer, _closed) = Closer::new(vec![1, 2, 3]);
        assert_eq!(closer.len(), 3);
    }
}
