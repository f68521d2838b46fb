//! Requests waiting to show in the kernel. The host applies a request after
//! the call that made it returns, so the next batch may still carry events
//! about the old value; a policy that asked once must not ask again until the
//! kernel shows the change (or the request is evidently lost).

use std::collections::BTreeMap;

use crate::InstantMs;

/// How long a request may take to show before it is treated as lost.
pub const SETTLE_TIMEOUT_MS: InstantMs = 2000;

/// Outstanding requests by key (for example `"<netns>/<sysctl>"`).
#[derive(Debug, Clone, Default)]
pub struct Settle {
    pending: BTreeMap<String, (Vec<i64>, InstantMs)>,
}

impl Settle {
    /// Nothing pending.
    pub fn new() -> Settle {
        Settle::default()
    }

    /// Whether a request under `key` is still on its way: made, not yet
    /// visible in `current`, and younger than [`SETTLE_TIMEOUT_MS`]. A
    /// request that showed or timed out is forgotten.
    pub fn waiting(&mut self, key: &str, current: &[i64], now: InstantMs) -> bool {
        let Some((value, since)) = self.pending.get(key) else { return false };
        if value.as_slice() != current && now.saturating_sub(*since) < SETTLE_TIMEOUT_MS {
            return true;
        }
        self.pending.remove(key);
        false
    }

    /// Remembers that `value` was requested under `key` at `now`.
    pub fn requested(&mut self, key: &str, value: &[i64], now: InstantMs) {
        self.pending.insert(key.to_string(), (value.to_vec(), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_the_kernel_shows_the_value_or_time_runs_out() {
        let mut settle = Settle::new();
        assert!(!settle.waiting("a", &[1], 0));
        settle.requested("a", &[2], 100);
        assert!(settle.waiting("a", &[1], 200));
        assert!(!settle.waiting("a", &[2], 300), "visible: done");
        assert!(!settle.waiting("a", &[1], 300), "and forgotten");
        settle.requested("a", &[2], 1000);
        assert!(!settle.waiting("a", &[1], 1000 + SETTLE_TIMEOUT_MS), "lost after the timeout");
    }
}
