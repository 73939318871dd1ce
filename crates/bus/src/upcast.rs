//! Upcasters: typed conversions from an earlier event version to the next, for changes
//! Avro resolution cannot express (a field split in two, a unit change).
//!
//! Each version that needs one keeps its own Rust type and `.avsc`. The newer type names
//! the older schemas in [`Event::HISTORY`] and converts in [`Event::upcast`] with
//! [`from`]; chains compose, so a v1 event reaches a v3 handler through v2's upcaster.
//!
//! ```
//! use herald_bus::{Event, codec::DecodeError, schema::KnownSchema};
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct ReadingV1 { station: String, celsius: f64 }
//! impl Event for ReadingV1 {
//!     const TYPE: &'static str = "weather.Reading";
//!     const SCHEMA: &'static str = r#"{"type":"record","name":"Reading","namespace":"weather","fields":[
//!         {"name":"station","type":"string"},{"name":"celsius","type":"double"}]}"#;
//!     fn aggregate_id(&self) -> &str { &self.station }
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Reading { station: String, kelvin: f64 }
//! impl Event for Reading {
//!     const TYPE: &'static str = "weather.Reading";
//!     const SCHEMA: &'static str = r#"{"type":"record","name":"Reading","namespace":"weather","fields":[
//!         {"name":"station","type":"string"},{"name":"kelvin","type":"double"}]}"#;
//!     const HISTORY: &'static [&'static str] = &[ReadingV1::SCHEMA];
//!     fn aggregate_id(&self) -> &str { &self.station }
//!     fn upcast(writer: &KnownSchema, datum: &[u8]) -> Option<Result<Self, DecodeError>> {
//!         herald_bus::upcast::from(writer, datum, |v1: ReadingV1| Reading { station: v1.station, kelvin: v1.celsius + 273.15 })
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::codec::DecodeError;
use crate::schema::{Fingerprint, KnownSchema};
use crate::Event;

/// Decodes `datum` as the earlier version `P` when `writer` is `P`'s schema (or one `P`
/// itself upcasts from), then converts it with `convert`. `None` when `writer` is not in
/// `P`'s history.
pub fn from<P: Event, E>(writer: &KnownSchema, datum: &[u8], convert: impl FnOnce(P) -> E) -> Option<Result<E, DecodeError>> {
    let previous = if Some(writer.fingerprint) == fingerprint_of(P::SCHEMA) {
        crate::event::decode_exact::<P>(writer, datum)
    } else {
        P::upcast(writer, datum)?
    };
    Some(previous.map(convert))
}

/// Fingerprints of schema texts, memoized: a pure cache keyed by the address of the
/// `'static` schema text, so parsing happens once per version, not once per event.
fn fingerprint_of(schema: &'static str) -> Option<Fingerprint> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Option<Fingerprint>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = schema.as_ptr() as usize;
    if let Some(fp) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return *fp;
    }
    let fp = serde_json::from_str(schema).ok().and_then(|json| Fingerprint::of_json(&json).ok());
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, fp);
    fp
}
