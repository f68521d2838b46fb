//! Fixture: a policy that sleeps in `on-events`. On wasm32-wasip2,
//! `std::thread::sleep` waits in a WASI host call (a monotonic-clock
//! pollable, then `wasi:io/poll`), where neither fuel nor the epoch deadline
//! can interrupt it: the host must refuse the wait itself.

use std::time::Duration;

use wasmtune_sdk::{Config, Event, EventKind, Info, Policy, log};

/// Far longer than any test runs.
const NAP: Duration = Duration::from_secs(1_000_000);

struct Sleeper;

impl Policy for Sleeper {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        Ok((Sleeper, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, _: &Event) {}

    fn on_events(&mut self, batch: &[Event]) {
        // Said first, so a test can time how long the sleeping call lasted.
        log::info(&format!("hostile-sleep: sleeping on a batch of {} event(s)", batch.len()));
        std::thread::sleep(NAP);
    }
}

wasmtune_sdk::export_policy!(Sleeper);
