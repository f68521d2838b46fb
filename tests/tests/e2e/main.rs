//! The end-to-end suite, one binary: real BPF programs on this kernel, real
//! sysctl writes in network namespaces the tests make, real policies in
//! wasmtime. Test names say how they are scheduled: `alone::` tests run one
//! at a time, `together::` tests beside anything (`.config/nextest.toml`).
//!
//! The harness (namespaces, veth links, traffic, the daemon, log capture)
//! is `wasmtune_tests::harness`; what several modules here share beyond it
//! is in `lifecycle` (control socket, policy files) and `tuning` (tuner
//! tests).

mod alone;
mod lifecycle;
mod together;
mod tuning;
mod fixtures_in_use;
