//! Fixture: a well-behaved policy whose embedded manifest is malformed (see
//! its policy.toml); the host must refuse to load it without running it.

use wasmtune_sdk::{Config, Event, EventKind, Info, Policy};

struct Quiet;

impl Policy for Quiet {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        Ok((Quiet, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, _: &Event) {}
}

wasmtune_sdk::export_policy!(Quiet);
