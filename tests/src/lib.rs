//! Shared pieces of wasmtune's end-to-end tests: the hostile and malformed
//! guest fixtures, and the harness that builds namespaces, links, traffic
//! and daemons, each cleaned up on drop.

pub mod guests;
pub mod harness;
