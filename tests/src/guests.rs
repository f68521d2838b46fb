//! The guest fixtures built from `tests/guests` by `tests/build.rs`: hostile
//! policies, malformed manifests and foreign components, by name.

use std::path::{Path, PathBuf};

/// Every fixture, by crate name: `guest_wasm(name)` finds each.
pub const FIXTURES: &[&str] = &[
    // Loops forever in on-events: stopped by the per-call budget.
    "hostile-loop",
    // Sleeps in on-events: a WASI wait the per-call budget cannot interrupt.
    "hostile-sleep",
    // Allocates 1 MiB chunks forever in on-events: stopped by the memory limit.
    "hostile-memory",
    // Traps (panics) on every batch.
    "hostile-trap",
    // Requests net.core.somaxconn (undeclared) and tcp_rmem (read-only grant).
    "hostile-ungranted",
    // Granted tcp_rmem[2] up to 8 MiB; requests 1 GiB and a change of field 0.
    "hostile-bounds",
    // Logs 10 000 lines of ~4 KiB per event.
    "hostile-log-flood",
    // Reads tcp_rmem in namespaces that do not exist, 1 000 times a second.
    "hostile-netns-probe",
    // Calls tcp.set-peer 100 000 times a tick, each for another peer.
    "hostile-peer-flood",
    // policy.toml has an unknown key under [policy].
    "bad-manifest-unknown-field",
    // policy.toml has `max = "big"` in a [[sysctl]].
    "bad-manifest-type",
    // A component of another world (`other:thing`), without a manifest.
    "other-world",
    // A policy built against wasmtune:policy@0.2.0, with a valid manifest.
    "other-version",
    // Claims the name tcp-buffer and traps in init: a broken new version.
    "trap-in-init",
    // Counts handled events in the host's state store, across versions.
    "state-counter",
];

/// Directory holding the fixtures' `.wasm` files, set by `tests/build.rs`.
pub fn guest_dir() -> &'static Path {
    Path::new(env!("WASMTUNE_TEST_GUESTS"))
}

/// The component file of fixture `name` (e.g. `"hostile-loop"`, built as
/// `hostile_loop.wasm`).
///
/// # Panics
/// If `name` is not a fixture or its file is missing.
pub fn guest_wasm(name: &str) -> PathBuf {
    assert!(FIXTURES.contains(&name), "{name:?} is not a guest fixture; known fixtures: {}", FIXTURES.join(", "));
    let path = guest_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "guest fixture {name} is missing at {} (tests/build.rs builds tests/guests; rebuild the wasmtune-tests crate)",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_is_built_as_a_component() {
        for name in FIXTURES {
            let bytes = std::fs::read(guest_wasm(name)).unwrap();
            // The component-model preamble: magic, version 0x0d, layer 1.
            assert_eq!(&bytes[..8], b"\0asm\x0d\x00\x01\x00", "{name} is not a component");
        }
    }

    #[test]
    fn sdk_fixtures_carry_a_manifest_section() {
        for name in FIXTURES.iter().filter(|n| **n != "other-world") {
            let bytes = std::fs::read(guest_wasm(name)).unwrap();
            assert!(bytes.windows(17).any(|w| w == b"wasmtune-manifest"), "{name} has no wasmtune-manifest section");
        }
    }

    #[test]
    #[should_panic(expected = "is not a guest fixture")]
    fn unknown_names_are_refused() {
        guest_wasm("no-such-fixture");
    }
}
