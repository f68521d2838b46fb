//! Fixture: a new version of tcp-buffer that traps (a panic aborts) in
//! `init`, so it can never take over from the version already running.

use wasmtune_sdk::{Config, Event, Info, Policy};

struct Broken;

impl Policy for Broken {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        panic!("trap-in-init: this version cannot start");
    }

    fn on_event(&mut self, _: &Event) {}
}

wasmtune_sdk::export_policy!(Broken);
