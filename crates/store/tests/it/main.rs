//! The store's integration tests: one conformance suite run against both engines, and a crash test.

// Test code fails by panicking; unwrap is how it says so.
#![allow(clippy::unwrap_used)]

mod conformance;
mod crash;
