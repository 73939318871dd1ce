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

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;
use rdkafka::ClientContext;

/// Asks `client` for `topic`'s metadata, waiting at most `timeout` (it blocks: call it off
/// the async workers). When no answer comes, gives the client its bootstrap servers back
/// ([`rebootstrap`]) before returning the error, so the next check finds brokers again if
/// the cluster is there.
///
/// ```no_run
/// use std::time::Duration;
/// use rdkafka::producer::{BaseProducer, Producer};
/// use rdkafka::ClientConfig;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092").create()?;
/// let answered = herald_bus::rebootstrap::check(producer.client(), "orders", Duration::from_secs(5));
/// println!("reachable: {}", answered.is_ok());
/// # Ok(())
/// # }
/// ```
pub fn check<C: ClientContext>(client: &Client<C>, topic: &str, timeout: Duration) -> KafkaResult<Metadata> {
    let answered = client.fetch_metadata(Some(topic), timeout);
    if let Err(e) = &answered {
        let added = rebootstrap(client);
        tracing::warn!(topic, error = %e, added, "no metadata from the cluster: the client's bootstrap servers given back");
    }
    answered
}

/// Adds the `bootstrap.servers` `client` was created with to its brokers, where
/// librdkafka has no configured broker of that address; returns how many of them the
/// client now has (see the [module docs](self)).
///
/// ```no_run
/// use rdkafka::producer::{BaseProducer, Producer};
/// use rdkafka::ClientConfig;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092").create()?;
/// if producer.client().fetch_metadata(None, std::time::Duration::from_secs(5)).is_err() {
///     herald_bus::rebootstrap::rebootstrap(producer.client());
/// }
/// # Ok(())
/// # }
/// ```
pub fn rebootstrap<C: ClientContext>(client: &Client<C>) -> usize {
    let Some(list) = bootstrap_servers(client) else { return 0 };
    // SAFETY: the handle is valid while `client` lives; librdkafka copies the list, and
    // `rd_kafka_brokers_add` may be called from any thread.
    let added = unsafe { rd::rd_kafka_brokers_add(client.native_ptr(), list.as_ptr()) };
    usize::try_from(added).unwrap_or(0)
}

/// The `bootstrap.servers` (or its alias `metadata.broker.list`) `client` was created
/// with, read back from librdkafka's copy of its configuration; `None` when unset.
fn bootstrap_servers<C: ClientContext>(client: &Client<C>) -> Option<CString> {
    const NAME: &CStr = c"bootstrap.servers";
    // SAFETY: `rd_kafka_conf` returns the client's own configuration, valid and not
    // changed while `client` lives. `rd_kafka_conf_get` is asked for the size first
    // (null buffer), then writes at most that many bytes, NUL included, into `buffer`.
    unsafe {
        let conf = rd::rd_kafka_conf(client.native_ptr());
        let mut size = 0usize;
        if rd::rd_kafka_conf_get(conf, NAME.as_ptr(), std::ptr::null_mut(), &mut size) != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
            return None;
        }
        let mut buffer = vec![0u8; size];
        if rd::rd_kafka_conf_get(conf, NAME.as_ptr(), buffer.as_mut_ptr().cast(), &mut size) != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
            return None;
        }
        let list = CStr::from_bytes_until_nul(&buffer).ok()?;
        (!list.is_empty()).then(|| list.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::{BaseProducer, Producer};
    use rdkafka::ClientConfig;

    use super::bootstrap_servers;

    fn producer(name: &str, value: &str) -> BaseProducer {
        ClientConfig::new().set(name, value).create().expect("a producer needs no broker to be created")
    }

    #[test]
    fn the_bootstrap_servers_are_read_back_from_the_client() {
        let p = producer("bootstrap.servers", "127.0.0.1:1,localhost:2");
        assert_eq!(bootstrap_servers(p.client()).as_deref(), Some(c"127.0.0.1:1,localhost:2"));
    }

    #[test]
    fn the_alias_metadata_broker_list_is_read_back_too() {
        let p = producer("metadata.broker.list", "127.0.0.1:3");
        assert_eq!(bootstrap_servers(p.client()).as_deref(), Some(c"127.0.0.1:3"));
    }

    #[test]
    fn a_client_without_bootstrap_servers_has_none_to_give_back() {
        let p = producer("client.id", "nobody");
        assert_eq!(bootstrap_servers(p.client()), None);
        assert_eq!(super::rebootstrap(p.client()), 0);
    }
}
