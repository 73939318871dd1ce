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
