//! The Wasm runtime: one engine, compiled policies, and one sandboxed
//! instance per policy on a thread of its own.
//!
//! - [`engine`]: the wasmtime engine, its epoch ticker and the compiled-component cache.
//! - [`image`]: a policy file checked, compiled and linked, ready to instantiate.
//! - [`state`]: what one policy's `Store` holds: its capabilities and limits.
//! - [`linker`]: the one list of what a guest can call.
//! - [`instance`]: one live instance with a per-call budget.
//! - [`worker`]: the thread that feeds a policy events, rebuilds it after a
//!   fault and quarantines it after repeated faults.
//! - [`quarantine`]: quarantined policy files, kept across restarts.

pub mod engine;
pub mod image;
pub mod instance;
pub mod linker;
pub mod state;
pub mod worker;
pub mod quarantine;
