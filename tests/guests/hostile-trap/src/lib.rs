//! Fixture: a policy that traps on every batch (a panic aborts, which traps).

use wasmtune_sdk::{Config, Event, EventKind, Info, Policy};

struct Crash;

impl Policy for Crash {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        Ok((Crash, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, _: &Event) {}

    fn on_events(&mut self, batch: &[Event]) {
        panic!("hostile-trap: trapping on a batch of {} event(s)", batch.len());
    }
}

wasmtune_sdk::export_policy!(Crash);
