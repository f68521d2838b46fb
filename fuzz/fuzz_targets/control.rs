//! Control-socket lines: requests as the server reads them
//! (`Request::from_line`), answers as the client reads them. A request
//! that reads re-encodes to one line that reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtune::control::{Request, Response};

fuzz_target!(|data: &[u8]| {
    // The server reads lines as UTF-8; anything else ends the connection.
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Ok(request) = Request::from_line(line) {
        let encoded = serde_json::to_string(&request).expect("a request encodes");
        assert!(!encoded.contains('\n'), "{encoded:?} is not one line");
        assert_eq!(Request::from_line(&encoded).expect("reads back"), request);
    }
    if let Ok(response) = serde_json::from_str::<Response>(line) {
        let encoded = serde_json::to_string(&response).expect("a response encodes");
        assert!(!encoded.contains('\n'), "{encoded:?} is not one line");
    }
});
