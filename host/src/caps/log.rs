//! `wasmtune:policy/log`: a policy's messages in the host log, tagged with
//! its name, made printable (a newline cannot forge the next line),
//! truncated, and rate-limited by a token bucket so that a policy
//! that floods cannot drown the host's own log or slow it down.

use crate::line_budget::LineBudget;
use crate::text::printable;
use crate::wit::wasmtune::policy::log::{Host, Level};

/// Longest message kept, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Lines a policy may log in a burst, and per second after it.
pub const BURST: f64 = 20.0;
pub const PER_SECOND: f64 = 5.0;

pub struct LogCap {
    policy: String,
    budget: LineBudget,
}

impl LogCap {
    pub fn new(policy: &str) -> LogCap {
        LogCap { policy: policy.to_string(), budget: LineBudget::new(BURST, PER_SECOND) }
    }

    fn admit(&mut self) -> bool {
        self.budget.admit()
    }
}

impl Host for LogCap {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.admit() {
            return Ok(());
        }
        if self.budget.suppressed > 0 {
            let dropped = std::mem::take(&mut self.budget.suppressed);
            tracing::warn!(event = "policy-log-suppressed", policy = %self.policy, dropped,
                "policy {} logged too fast: {} line(s) dropped", self.policy, dropped);
        }
        let text = printable(&message, MAX_MESSAGE_BYTES);
        let policy = self.policy.as_str();
        match level {
            Level::Trace => tracing::trace!(event = "policy-log", policy, "{text}"),
            Level::Debug => tracing::debug!(event = "policy-log", policy, "{text}"),
            Level::Info => tracing::info!(event = "policy-log", policy, "{text}"),
            Level::Warn => tracing::warn!(event = "policy-log", policy, "{text}"),
            Level::Error => tracing::error!(event = "policy-log", policy, "{text}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst() {
        let mut cap = LogCap::new("flood");
        let admitted = (0..10_000).filter(|_| cap.admit()).count();
        assert!(admitted as f64 <= BURST + 1.0, "{admitted}");
        assert!(cap.budget.suppressed >= 9_000);
    }

    #[test]
    fn a_message_cannot_forge_a_log_line() {
        let mut cap = LogCap::new("forger");
        // Logged through the real path: the line must stay one line.
        assert!(cap.log(Level::Info, "done\nINFO event=\"sysctl-change\" forged".into()).is_ok());
        assert_eq!(printable("done\nINFO forged", MAX_MESSAGE_BYTES), "done\\nINFO forged");
        assert!(printable(&"é".repeat(MAX_MESSAGE_BYTES), MAX_MESSAGE_BYTES).len() <= MAX_MESSAGE_BYTES);
    }
}
