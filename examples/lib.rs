//! Runnable examples, one per capability; see the header of each file for how to run it
//! and what it shows. This crate has no library code.
