//! Tests that share the machine, run one at a time (`.config/nextest.toml`
//! puts every test under `alone::` in the serial group): they push traffic
//! whose figures they measure, change sysctls of the initial namespace, or
//! run a daemon that reacts to writes and namespaces beyond their own.

mod actuator;
mod admin_override;
mod admin_rules;
mod bad_files;
mod bpf_events;
mod c_policy;
mod canary;
mod churn;
mod control;
mod crash;
mod harness_selftest;
mod hostile;
mod hostile_blocking;
mod hostile_flood;
mod hotswap;
mod metrics;
mod namespaces;
mod ownership;
mod per_destination;
mod policy_trust;
mod record_replay;
mod runtime_process;
mod scaffold;
mod shadow;
mod signals;
mod state_handover;
mod systemd;
mod tcp_buffer;
mod tuners;
mod tuners_memory;
mod tuners_netdev;
mod tuners_syn;
