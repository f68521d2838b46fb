//! wasmtune: an always-on Linux network auto-tuner whose tuning policies run
//! as sandboxed WebAssembly components. Modules are declared in the order of
//! the data path: kernel signals in, checked kernel writes out.

pub mod paths;
pub mod wit;

pub mod bpf;
pub mod events;
pub mod netns;

pub mod config;
pub mod manifest;
pub mod runtime;
pub mod caps;
pub mod grants;
pub mod router;
pub mod builtin;

pub mod sysctl;
pub mod actuate;
pub mod ledger;

pub mod support;
pub mod watcher;
pub mod daemon;
pub mod cli;
