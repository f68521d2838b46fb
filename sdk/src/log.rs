//! Logging into the host's log, where each line is tagged with the policy's
//! name. The host rate-limits and truncates; these calls never fail.
//!
//! Log explanations, not traffic: one line per decision the administrator
//! should know about. The crate-root macros ([`info!`](crate::info) and
//! friends) take `format!` arguments.

pub use crate::bindings::wasmtune::policy::log::Level;

use crate::bindings::wasmtune::policy::log as imports;

/// Writes `message` at `level`.
pub fn log(level: Level, message: &str) {
    imports::log(level, message);
}

/// A `trace` line.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// A `debug` line.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// An `info` line.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// A `warn` line.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// An `error` line.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// `trace!("fmt", args..)`: a formatted trace line.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

/// `debug!("fmt", args..)`: a formatted debug line.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

/// `info!("fmt", args..)`: a formatted info line.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

/// `warn!("fmt", args..)`: a formatted warning.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

/// `error!("fmt", args..)`: a formatted error line.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}
