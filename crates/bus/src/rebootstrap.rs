//! Giving a client its bootstrap servers back after librdkafka dropped every broker.
//!
//! librdkafka (2.10 to 2.12 at least) removes from a client the brokers a metadata
//! response does not list, and a response that lists none stops its own re-bootstrap too
//! (confluentinc/librdkafka#5301, open). A KRaft broker fenced for a moment (paused past
//! `broker.session.timeout.ms` by a GC pause or a stalled VM) answers exactly that while it
//! is fenced: on a single-broker cluster, or with every broker fenced at once, a client
//! that asked then is left with no broker and never connects again. Every request fails
//! with "broker transport failure" for as long as the process lives, while new clients
//! of the same cluster work (seen with Herald's gateway: `503` for good after a 10 s
//! pause of the broker).
//!
//! [`rebootstrap`] adds the bootstrap servers back, as librdkafka's own re-bootstrap does;
//! the next metadata response brings the brokers the cluster lists, and librdkafka
//! retires the bootstrap entries again. Call it when a request of a long-lived client
//! failed for want of a broker; with brokers known, it only adds a connection until the
//! next metadata response.
//!
//! A client left so says nothing (no error, no record: an idle topic looks the same), so
//! a long-lived one is asked now and then: [`check`] asks for a topic's metadata and
//! re-bootstraps when no answer comes. The consumer runtime, the gateway's producer and its
//! idempotency reader run it every few seconds; a [`Publisher`](crate::Publisher) calls
//! [`rebootstrap`] when a send timed out.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;
use rdkafka::ClientContext;

/// Asks `client` for `topic`'s metadata, waiting at most `timeout` (it blocks: call it off
/// the async workers). When no answer comes, gives the client `bootstrap` back
/// ([`rebootstrap`]) before returning the error, so the next check finds brokers again if
/// the cluster is there.
///
/// ```no_run
/// use std::time::Duration;
/// use rdkafka::producer::{BaseProducer, Producer};
/// use rdkafka::ClientConfig;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092").create()?;
/// let answered = herald_bus::rebootstrap::check(producer.client(), "orders", "127.0.0.1:9092", Duration::from_secs(5));
/// println!("reachable: {}", answered.is_ok());
/// # Ok(())
/// # }
/// ```
pub fn check<C: ClientContext>(client: &Client<C>, topic: &str, bootstrap: &str, timeout: Duration) -> KafkaResult<Metadata> {
    let answered = client.fetch_metadata(Some(topic), timeout);
    if let Err(e) = &answered {
        let added = rebootstrap(client, bootstrap);
        tracing::warn!(topic, error = %e, added, "no metadata from the cluster: the client's bootstrap servers given back");
    }
    answered
}

/// Adds `bootstrap` (`host:port[,host:port...]`, as `bootstrap.servers`) to `client`'s
/// brokers, where librdkafka has no configured broker of that address; returns how many
/// of them the client now has (see the [module docs](self)).
///
/// ```no_run
/// use rdkafka::producer::{BaseProducer, Producer};
/// use rdkafka::ClientConfig;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092").create()?;
/// if producer.client().fetch_metadata(None, std::time::Duration::from_secs(5)).is_err() {
///     herald_bus::rebootstrap::rebootstrap(producer.client(), "127.0.0.1:9092");
/// }
/// # Ok(())
/// # }
/// ```
pub fn rebootstrap<C: ClientContext>(client: &Client<C>, bootstrap: &str) -> usize {
    let Ok(list) = CString::new(bootstrap) else { return 0 };
    // SAFETY: the handle is valid while `client` lives; librdkafka copies the list, and
    // `rd_kafka_brokers_add` may be called from any thread.
    let added = unsafe { rd::rd_kafka_brokers_add(client.native_ptr(), list.as_ptr()) };
    usize::try_from(added).unwrap_or(0)
}
