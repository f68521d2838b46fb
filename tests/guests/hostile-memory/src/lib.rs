//! Fixture: a policy that grows its memory by 1 MiB chunks, touching every
//! page, until the host's memory limit stops it.
//!
//! Each chunk is written one byte per page rather than filled, so that the
//! memory limit, not the per-call time budget, is what stops it.

use std::cell::RefCell;
use std::hint::black_box;

use wasmtune_sdk::{Config, Event, EventKind, Info, Policy};

const CHUNK: usize = 1 << 20;
const PAGE: usize = 4096;

thread_local! {
    static HOARD: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

struct Hoarder;

impl Policy for Hoarder {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        Ok((Hoarder, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, _: &Event) {}

    fn on_events(&mut self, _: &[Event]) {
        HOARD.with(|hoard| {
            let mut hoard = hoard.borrow_mut();
            loop {
                let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK);
                for byte in chunk.spare_capacity_mut().iter_mut().step_by(PAGE) {
                    byte.write(0xa5);
                }
                hoard.push(black_box(chunk));
            }
        });
    }
}

wasmtune_sdk::export_policy!(Hoarder);
