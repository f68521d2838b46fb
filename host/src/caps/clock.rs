//! `wasmtune:policy/clock`: monotonic time, nothing else. In the daemon,
//! milliseconds since the runtime started; in a simulation (`policy test`,
//! `replay`), the time of the input being replayed, so that a run is the
//! same every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::wit::wasmtune::policy::clock::Host;

pub enum ClockCap {
    /// Real time since this instant.
    Since(Instant),
    /// Simulated time, milliseconds, moved by whoever holds the other end.
    Simulated(Arc<AtomicU64>),
}

impl ClockCap {
    pub fn since(started: Instant) -> ClockCap {
        ClockCap::Since(started)
    }

    pub fn now_ms(&self) -> u64 {
        match self {
            ClockCap::Since(started) => u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ClockCap::Simulated(now) => now.load(Ordering::Acquire),
        }
    }
}

impl Host for ClockCap {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.now_ms())
    }
}
