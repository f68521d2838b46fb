//! Fixture: a policy that writes 10 000 lines of about 4 KiB on every event.
//! The host must rate-limit and truncate without slowing down.

use wasmtune_sdk::{Config, Event, EventKind, Info, Level, Policy, log};

const LINES_PER_EVENT: usize = 10_000;
const LINE_BYTES: usize = 4096;

struct Flood {
    line: String,
}

impl Policy for Flood {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        let line = "flood ".repeat(LINE_BYTES / 6 + 1)[..LINE_BYTES].to_string();
        Ok((Flood { line }, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, _: &Event) {
        for _ in 0..LINES_PER_EVENT {
            log::log(Level::Info, &self.line);
        }
    }
}

wasmtune_sdk::export_policy!(Flood);
