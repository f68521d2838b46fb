//! Fixture: a policy that never returns from `on-events`. The host's
//! per-call budget (fuel or epoch deadline) must stop it.

use std::hint::black_box;

use wasmtune_sdk::{Config, Event, EventKind, Info, Policy};

struct Spin;

impl Policy for Spin {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        Ok((Spin, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, _: &Event) {}

    fn on_events(&mut self, _: &[Event]) {
        // `black_box` keeps the optimiser from proving the loop useless;
        // no host call inside, so only the budget can end it.
        let mut turns = 0u64;
        loop {
            turns = black_box(turns.wrapping_add(1));
        }
    }
}

wasmtune_sdk::export_policy!(Spin);
