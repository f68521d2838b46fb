//! A token bucket of log lines: a burst, then a steady rate. What it
//! refuses is counted, so that the caller can say how much it dropped.
//! Used wherever lines come from a source the host does not trust to be
//! quiet: a policy's log, the runtime process's output.

use std::time::Instant;

pub struct LineBudget {
    burst: f64,
    per_second: f64,
    tokens: f64,
    refilled: Instant,
    /// Lines refused since the caller last took the count.
    pub suppressed: u64,
}

impl LineBudget {
    /// Full: `burst` lines at once, then `per_second`.
    pub fn new(burst: f64, per_second: f64) -> LineBudget {
        LineBudget { burst, per_second, tokens: burst, refilled: Instant::now(), suppressed: 0 }
    }

    /// Whether one more line may go now; a refusal is counted.
    pub fn admit(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
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
