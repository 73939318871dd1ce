//! # herald-schema
pub mod avsc;
pub mod compat;
mod graph;
pub mod mode;

pub use avsc::{Avsc, ParseError};
