//! Fixture: a valid component of an unrelated world (`other:thing`), with no
//! manifest. The host must refuse it as not a wasmtune policy.

wit_bindgen::generate!({
    path: "wit",
    world: "other:thing/thing",
});

struct Thing;

impl Guest for Thing {
    fn run() {}
}

export!(Thing);
