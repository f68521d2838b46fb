//! wasmtune: an always-on Linux network auto-tuner whose tuning policies run
//! as sandboxed WebAssembly components. Modules are declared in the order of
//! the data path: kernel signals in, checked kernel writes out.

// Shared vocabulary.
pub mod paths;
pub mod wit;

// Kernel signals in.
pub mod bpf;
pub mod events;
pub mod signals;
pub mod netns;

// Policies: what they are, what they may do, where they run.
pub mod builtin;
pub mod manifest;
pub mod config;
pub mod runtime;
pub mod caps;
pub mod grants;
pub mod router;

// Kernel writes out, and their record.
pub mod sysctl;
pub mod sysctl_d;
pub mod state_file;
pub mod overrides;
pub mod missing;
pub mod actuate;
pub mod ledger;

// Around the data path.
pub mod support;
pub mod watcher;
pub mod control;
pub mod daemon;
pub mod cli;
