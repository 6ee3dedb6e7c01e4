//! The store's integration tests: one conformance suite run against both engines, and a crash test.

mod conformance;
mod crash;
