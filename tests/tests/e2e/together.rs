//! Tests confined to what they create, run in parallel with anything.

mod policy_files;
mod policy_units;
