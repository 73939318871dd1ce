//! Rebuilds (see views).
