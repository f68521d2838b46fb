//! The runtime-process protocol, as the host reads it: a stream of frames
//! from a runtime that may be compromised. Reading never panics, never
//! allocates past the frame limit, and a message that reads re-encodes to
//! a frame that reads back. The runtime's side (`ToRuntime`) is read too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtune::runtime::protocol::{
    self, FromRuntime, MAX_FROM_RUNTIME, MAX_TO_RUNTIME, ProtocolError, ToRuntime,
};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    // At most a few frames: each read consumes at least its 4-byte length.
    for _ in 0..16 {
        match protocol::read_frame::<FromRuntime>(&mut input, MAX_FROM_RUNTIME, 0) {
            Ok(message) => {
                let frame = protocol::encode_frame(&message).expect("a message read encodes");
                let again: FromRuntime =
                    protocol::read_frame(&mut frame.as_slice(), usize::MAX, 0).expect("reads back");
                assert_eq!(format!("{again:?}"), format!("{message:?}"));
            }
            Err(ProtocolError::Closed) => break,
            Err(_) => break,
        }
    }
    let _ = protocol::decode::<ToRuntime<'static>>(data);
    let _ = protocol::read_frame::<ToRuntime<'static>>(&mut &data[..], MAX_TO_RUNTIME, 0);
});
