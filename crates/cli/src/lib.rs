//! # herald-cli: the `herald` command's reusable parts
//!
//! The binary (`src/main.rs`) is the command line; this library holds what is worth
//! testing and reusing on its own.
//!
//! # Layout
//! - [`json`]: JSON ⇄ Avro values guided by a schema, with errors that name the field
//!   (`field lines[0].quantity: expected int, got string "two"`). It lives in
//!   herald-schema (the gateway validates request bodies with it too); re-exported here.
//!
//! # Guarantees
//! - A JSON value is either mapped to an Avro value that validates against its schema, or
//!   refused with the path of the first part that does not fit; nothing is coerced
//!   silently (no rounding of numbers, no truncation of ints, no guessing between union
//!   branches).

pub use herald_schema::json;
