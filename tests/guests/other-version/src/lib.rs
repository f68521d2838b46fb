//! Fixture: a policy built against a future contract version,
//! `wasmtune:policy@0.2.0`, with a valid manifest. The host must refuse it
//! for its version, not fail on a missing export.

wit_bindgen::generate!({
    path: "wit",
    world: "wasmtune:policy/policy@0.2.0",
});

use exports::wasmtune::policy::handler::{Config, Event, EventKind, Guest, Info, InstantMs};

struct Future;

impl Guest for Future {
    fn init(_: Config) -> Result<Info, String> {
        Ok(Info { subscriptions: vec![EventKind::TcpBufferLimit], tick_ms: None })
    }

    fn on_events(_: Vec<Event>) {}

    fn on_tick(_: InstantMs) {}
}

export!(Future);

// The same manifest section the SDK writes, so that only the version differs
// from a loadable policy.
#[cfg_attr(target_arch = "wasm32", unsafe(link_section = "wasmtune-manifest"))]
#[used]
static MANIFEST: [u8; include_bytes!("../policy.toml").len()] = *include_bytes!("../policy.toml");
