//! `wasmtune:policy/log`: a policy's messages in the host log, tagged with
//! its name, truncated, and rate-limited by a token bucket so that a policy
//! that floods cannot drown the host's own log or slow it down.

use std::time::Instant;

use crate::wit::wasmtune::policy::log::{Host, Level};

/// Longest message kept, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Lines a policy may log in a burst, and per second after it.
pub const BURST: f64 = 20.0;
pub const PER_SECOND: f64 = 5.0;

pub struct LogCap {
    policy: String,
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl LogCap {
    pub fn new(policy: &str) -> LogCap {
        LogCap { policy: policy.to_string(), tokens: BURST, refilled: Instant::now(), suppressed: 0 }
    }

    fn admit(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * PER_SECOND).min(BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

fn truncate(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl Host for LogCap {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.admit() {
            return Ok(());
        }
        if self.suppressed > 0 {
            tracing::warn!(event = "policy-log-suppressed", policy = %self.policy, dropped = self.suppressed,
                "policy {} logged too fast: {} line(s) dropped", self.policy, self.suppressed);
            self.suppressed = 0;
        }
        let text = truncate(&message);
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
        assert!(cap.suppressed >= 9_000);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        assert!(truncate(&long).len() <= MAX_MESSAGE_BYTES);
        assert_eq!(truncate("short"), "short");
    }
}
