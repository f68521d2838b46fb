//! Prometheus metrics: `GET /metrics` ([`http`], off unless `run --metrics`
//! or `[metrics] listen` asks for it) and `wasmtune metrics` over the
//! control socket, both the same exposition (`docs/metrics.md`).
//!
//! Two sources, so that an idle daemon pays nothing and a busy one pays
//! an atomic add where something happens:
//! - [`counters`]: what happens, counted where it happens (events by kind
//!   in the router, decisions and denials in the sysctl capability,
//!   changes in the actuator, faults and quarantines in the policy
//!   workers). They live in one process-wide [`Counters`], so the stages
//!   that count need no new plumbing; they are exposed only by a daemon.
//! - at scrape time: what the daemon already keeps for `wasmtune status`
//!   (the policies' counters, the tunables changed with their values now,
//!   the overrides), read from its answer ([`exposition`]), and the BPF
//!   programs' run counters when the kernel counts them ([`hooks`]).

pub mod counters;
pub mod exposition;
pub mod hooks;
pub mod http;
pub mod values;

pub use counters::{Counters, global};
pub use exposition::{Format, render};
pub use http::{MetricsServer, ServeError};
