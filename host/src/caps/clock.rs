//! `wasmtune:policy/clock`: monotonic time since the host started, nothing else.

use std::time::Instant;

use crate::wit::wasmtune::policy::clock::Host;

pub struct ClockCap {
    pub started: Instant,
}

impl Host for ClockCap {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}
