//! The Wasm runtime: one engine, compiled policies, and one sandboxed
//! instance per policy, all in a separate, unprivileged, confined process;
//! the host keeps one thread per policy that feeds it and answers its calls.
//!
//! In the runtime process:
//! - [`process`]: its main loop: a channel per policy, served on a thread each.
//! - [`engine`]: the wasmtime engine, its epoch ticker, and compiled components loaded
//!   from or written to the cache files the host hands over.
//! - [`image`]: a policy file read by the host ([`image::PolicyImage`]), and
//!   checked, compiled and linked by the runtime ([`image::CompiledPolicy`]).
//! - [`state`]: what one policy's `Store` holds: its link to the host and its limits.
//! - [`linker`]: the one list of what a guest can call.
//! - [`instance`]: one live instance with a per-call budget.
//! - [`remote`]: a guest's host calls sent to the host, sysctl reads kept per kernel epoch.
//!
//! Shared: [`protocol`] (the frames between the two), [`calls`] (host calls as values).
//!
//! In the host:
//! - [`supervisor`]: starts the runtime process confined, restarts it with back-off.
//! - [`output`]: the runtime's log lines, relayed into the daemon's log, marked as its.
//! - [`cache_broker`]: opens the compiled-component cache files the runtime may use.
//! - [`channel`]: the host's end of a policy's channel, with deadlines.
//! - [`worker`]: the thread that feeds a policy events, answers its calls, rebuilds
//!   it after a fault or a lost runtime, and quarantines it after repeated faults.
//! - [`quarantine`]: quarantined policy files, kept across restarts.

pub mod calls;
pub mod engine;
pub mod image;
pub mod instance;
pub mod linker;
pub mod protocol;
pub mod remote;
pub mod state;
pub mod process;
pub mod channel;
pub mod supervisor;
pub mod output;
pub mod cache_broker;
pub mod worker;
pub mod quarantine;
