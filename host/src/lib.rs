//! wasmtune: an always-on Linux network auto-tuner whose tuning policies run
//! as sandboxed WebAssembly components. Modules are declared in the order of
//! the data path: kernel signals in, checked kernel writes out.

pub mod paths;
pub mod wit;

pub mod bpf;
pub mod events;
pub mod netns;
pub mod signals;

pub mod builtin;
pub mod caps;
pub mod config;
pub mod grants;
pub mod manifest;
pub mod router;
pub mod runtime;

pub mod actuate;
pub mod ledger;
pub mod sysctl;

pub mod cli;
pub mod control;
pub mod daemon;
pub mod support;
pub mod watcher;
