//! wasmtune: an always-on Linux network auto-tuner whose tuning policies run
//! as sandboxed WebAssembly components.
//!
//! Modules are declared so that each uses only modules declared before it
//! (`packaging/check-module-order.py` checks this): the vocabulary every
//! stage shares, kernel access, the signals coming in (in data-path order),
//! then the writes going out, built bottom-up — the record and the one
//! choke point first, the capabilities that submit to it, the runtime that
//! links those capabilities, the router that feeds the runtime — and what
//! runs around the data path.

// Shared vocabulary.
pub mod paths;
pub mod wit;
pub mod text;
pub mod line_budget;
pub mod peer;
pub mod admin_write;
pub mod probe;
pub mod procfs;
pub mod machine;
pub mod sandbox;

// Kernel access: namespaces and sysctls.
pub mod netns;
pub mod sysctl;

// Kernel signals in.
pub mod events;
pub mod recording;
pub mod bpf;
pub mod signals;

// What policies may do.
pub mod canary;
pub mod manifest;
pub mod config;
pub mod grants;

// Kernel writes out, and their record.
pub mod sysctl_d;
pub mod state_file;
pub mod overrides;
pub mod missing;
pub mod ledger;
// What the stages from here on count, and the exposition of it.
pub mod metrics;
pub mod actuate;

// Policies: their capabilities, where they run, what reaches them.
pub mod caps;
pub mod runtime;
pub mod builtin;
pub mod router;
pub mod simulate;

// Around the data path.
pub mod support;
pub mod trust;
pub mod dir_events;
pub mod watcher;
pub mod control;
pub mod daemon;
pub mod scaffold;
pub mod cli;
pub mod generate;
pub mod journald;
