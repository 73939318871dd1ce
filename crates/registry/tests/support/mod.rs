//! Shared test support: the fake registry and shop schemas.
#![allow(dead_code)]

pub mod fake;

use herald_bus::schema::SchemaSet;
use herald_bus::EventFamily;
use herald_shop::OrderEvent;

/// The shop's order schemas, as the consumer's codec factory would get them.
pub fn order_schemas() -> SchemaSet {
    OrderEvent::schemas().clone()
}

/// Fast retries so failure tests finish quickly.
pub fn quick_backoff() -> herald_registry::Backoff {
    herald_registry::Backoff {
        attempts: 3,
        initial: std::time::Duration::from_millis(10),
        max: std::time::Duration::from_millis(50),
    }
}

/// The real Confluent-compatible registry of this test run (`scripts/registry start`,
/// then `HERALD_REGISTRY_URL=$(scripts/registry url)`). Panics with instructions when
/// unset: these tests must not pass without the registry they need.
pub fn real_registry() -> herald_registry::Registry {
    let Ok(url) = std::env::var("HERALD_REGISTRY_URL") else {
        panic!(
            "HERALD_REGISTRY_URL is not set: run `scripts/registry start` and set \
             HERALD_REGISTRY_URL=$(scripts/registry url) (a Confluent-compatible API base URL)"
        )
    };
    herald_registry::Registry::new(herald_registry::RegistryConfig::new(url).backoff(quick_backoff())).expect("registry client")
}
