//! Raw ring-buffer records, as the BPF programs post them, through
//! `events::decode`: any bytes decode to an event or an error, never a
//! panic, and a decoded event has a kind and a namespace (the router needs
//! both).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtune::events::{decode, event_kind, event_netns};

fuzz_target!(|record: &[u8]| {
    if let Ok(event) = decode(record) {
        assert!(event_kind(&event).is_some(), "{event:?} has no kind");
        assert!(event_netns(&event).is_some(), "{event:?} has no namespace");
    }
});
