//! Deterministic ids, correlation and causation of what a reaction emits.
//!
//! A reaction to one input is a pure function of (state, input, now), so the runtime can
//! replay it after an aborted transaction or a crash. For the replay to emit the *same*
//! events, their ids are not random: each is a name-based UUID (version 5, SHA-1) of the
//! participant's name, the input's identity (`ce_source` and `ce_id`: CloudEvents lets
//! producers of different sources use the same id) and the output's index in the reaction
//! (unless the participant gives an id as deterministic,
//! [`Emitted::with_id`](crate::emit::Emitted::with_id)). Readers that deduplicate by
//! `ce_id` then see one event, however often a reaction ran, and one per input.

use chrono::{DateTime, Utc};
use herald_bus::trace::TraceContext;
use herald_bus::Metadata;
use uuid::Uuid;

/// The namespace of Herald's name-based event ids (a fixed, random UUID).
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_4c0e_93d2_4b8e_8f3c_25d7_b1e0_a942);

/// The id of output number `index` of `participant`'s reaction to the input
/// `input_id` from `input_source` (its `ce_source`).
///
/// The participant's name is part of it: two participants that react to the same input
/// emit different ids. So is the input's source: two inputs with the same id from
/// different sources are different events, and so are their outputs.
///
/// ```
/// use herald_choreography::ids::event_id;
/// let input = uuid::Uuid::from_u128(7);
/// assert_eq!(event_id("orders", "/web", input, 0), event_id("orders", "/web", input, 0));
/// assert_ne!(event_id("orders", "/web", input, 0), event_id("orders", "/web", input, 1));
/// assert_ne!(event_id("orders", "/web", input, 0), event_id("payments", "/web", input, 0));
/// assert_ne!(event_id("orders", "/web", input, 0), event_id("orders", "/mobile", input, 0));
/// assert_eq!(event_id("orders", "/web", input, 0).get_version_num(), 5);
/// ```
pub fn event_id(participant: &str, input_source: &str, input_id: Uuid, index: u32) -> Uuid {
    let mut name = Vec::with_capacity(participant.len() + 1 + input_source.len() + 1 + 16 + 4);
    name.extend_from_slice(participant.as_bytes());
    name.push(0);
    name.extend_from_slice(input_source.as_bytes());
    name.push(0);
    name.extend_from_slice(input_id.as_bytes());
    name.extend_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&NAMESPACE, &name)
}

/// The id of the input a deadline becomes when it fires: derived from the id of the input
/// whose reaction set it, the state key it was set for, the deadline's name and its time,
/// so a replay fires the same input and its reaction emits the same ids. (The key keeps
/// apart the deadlines of two sagas started by inputs of the same id from different
/// sources.)
///
/// ```
/// use herald_choreography::ids::deadline_id;
/// let set_by = uuid::Uuid::from_u128(7);
/// assert_eq!(deadline_id(set_by, "o-1", "timeout", 1_000), deadline_id(set_by, "o-1", "timeout", 1_000));
/// assert_ne!(deadline_id(set_by, "o-1", "timeout", 1_000), deadline_id(set_by, "o-1", "timeout", 2_000));
/// assert_ne!(deadline_id(set_by, "o-1", "timeout", 1_000), deadline_id(set_by, "o-2", "timeout", 1_000));
/// ```
pub fn deadline_id(set_by: Uuid, key: &str, name: &str, at_millis: i64) -> Uuid {
    let mut bytes = Vec::with_capacity(16 + key.len() + 10 + name.len() + 8);
    bytes.extend_from_slice(set_by.as_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(b"\0deadline\0");
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&at_millis.to_be_bytes());
    Uuid::new_v5(&NAMESPACE, &bytes)
}

/// The metadata of output number `index` of `participant`'s reaction to the input `cause`:
/// the deterministic id, `event_type` and `subject` (the Kafka key), `time` = `now`, the
/// cause's correlation id (or its id when it has none: it started the flow), the cause's id
/// as causation id, and a child span of the cause's trace whose span id derives from the
/// event id (so a replay writes the same `traceparent` too).
///
/// This is what the runtime publishes with (the publisher's `encode(topic, event, &meta)`
/// takes metadata as given).
///
/// ```
/// use herald_bus::{trace::TraceContext, Metadata};
/// use herald_choreography::ids::{event_id, metadata};
/// let mut placed = Metadata::new("shop.orders.OrderPlaced", "/checkout", "o-1");
/// placed.trace = Some(TraceContext::new_root());
/// let meta = metadata("orders", "/shop/orders", &placed, 0, "shop.orders.OrderConfirmed", "o-1", placed.time);
/// assert_eq!(meta.id, event_id("orders", "/checkout", placed.id, 0));
/// assert_eq!(meta.causation_id, Some(placed.id.to_string()));
/// assert_eq!(meta.correlation_id, placed.correlation_id);
/// let (trace, parent) = (meta.trace.unwrap(), placed.trace.unwrap());
/// assert_eq!(trace.trace_id, parent.trace_id, "the input's trace");
/// assert_ne!(trace.span_id, parent.span_id, "a span of its own");
/// let again = metadata("orders", "/shop/orders", &placed, 0, "shop.orders.OrderConfirmed", "o-1", placed.time);
/// assert_eq!(again, meta, "a replay writes identical metadata");
/// // What `Metadata::caused_by` gives, with the derived id, time and span.
/// let mut long_way = Metadata::new("shop.orders.OrderConfirmed", "/shop/orders", "o-1").caused_by(&placed);
/// (long_way.id, long_way.time) = (meta.id, placed.time);
/// long_way.trace = long_way.trace.map(|t| herald_bus::trace::TraceContext { span_id: trace.span_id, ..t });
/// assert_eq!(long_way, meta);
/// ```
pub fn metadata(participant: &str, source: &str, cause: &Metadata, index: u32, event_type: &str, subject: &str, now: DateTime<Utc>) -> Metadata {
    metadata_with_id(event_id(participant, &cause.source, cause.id, index), source, cause, event_type, subject, now)
}

/// [`metadata`] with the id `id` (an [`Emitted::with_id`](crate::emit::Emitted::with_id)):
/// the span id derives from it as well.
///
/// ```
/// use herald_bus::Metadata;
/// use herald_choreography::ids::{event_id, metadata, metadata_with_id};
/// let placed = Metadata::new("shop.orders.OrderPlaced", "/checkout", "o-1");
/// let derived = metadata("orders", "/shop/orders", &placed, 0, "shop.orders.OrderConfirmed", "o-1", placed.time);
/// let given = metadata_with_id(event_id("orders", "/checkout", placed.id, 0), "/shop/orders", &placed, "shop.orders.OrderConfirmed", "o-1", placed.time);
/// assert_eq!(given, derived);
/// ```
pub fn metadata_with_id(id: Uuid, source: &str, cause: &Metadata, event_type: &str, subject: &str, now: DateTime<Utc>) -> Metadata {
    // Built directly rather than as `Metadata::new(..).caused_by(cause)` with its id, time
    // and span replaced: that drew a random UUIDv7, read the clock, formatted the unused id
    // as a correlation id and drew a random span id, for every output.
    Metadata {
        id,
        original_id: None,
        event_type: event_type.to_owned(),
        source: source.to_owned(),
        time: now,
        subject: subject.to_owned(),
        correlation_id: Some(cause.correlation()),
        causation_id: Some(cause.ce_id()),
        trace: cause.trace.map(|t| TraceContext { span_id: span_id(id), ..t }),
        tracestate: cause.tracestate.clone(),
    }
}

/// A nonzero span id from the first 8 bytes of an event id.
fn span_id(id: Uuid) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_be_bytes(bytes).max(1)
}
