//! Fixture: keeps a running count of the events it handled in the host's
//! per-policy state store, so a new version (or a rebuilt instance) carries
//! on from the old one's count; also checks that the store's quota holds.

use wasmtune_sdk::{Config, Event, EventKind, Info, Policy, state};

const HANDLED: &str = "handled";

struct Counter;

impl Policy for Counter {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        let inherited = state::get_u64(HANDLED);
        wasmtune_sdk::info!("state-counter starting with {inherited} events handled before");
        match state::set("oversized", &vec![0u8; 128 * 1024]) {
            Err(denial) => wasmtune_sdk::info!("state quota holds: {}", denial.kind()),
            Ok(()) => wasmtune_sdk::error!("state quota did not hold"),
        }
        Ok((Counter, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, _: &Event) {}

    fn on_events(&mut self, batch: &[Event]) {
        let seen = batch.iter().filter(|e| !matches!(e, Event::Lost(_))).count() as u64;
        if state::set_u64(HANDLED, state::get_u64(HANDLED) + seen).is_err() {
            wasmtune_sdk::error!("state-counter cannot store its count");
        }
    }
}

wasmtune_sdk::export_policy!(Counter);
