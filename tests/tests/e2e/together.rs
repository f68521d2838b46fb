//! Tests confined to what they create, run in parallel with anything.

mod host_time;
mod memory_budget;
mod no_blocking;
mod policy_files;
mod policy_test;
mod policy_units;
mod random_policies;
