//! The policies compiled into the binary, so `wasmtune run` tunes with zero
//! configuration. Built from `policies/` by the build script.

use std::sync::Arc;

use crate::runtime::image::{PolicyImage, PolicySource};

include!(concat!(env!("OUT_DIR"), "/builtin_policies.rs"));

/// Reads every built-in (the runtime process compiles them); one that
/// fails is reported and skipped.
pub fn load_all() -> Vec<Arc<PolicyImage>> {
    BUILTIN_POLICIES
        .iter()
        .filter_map(|(file, bytes)| match PolicyImage::read(bytes, PolicySource::Builtin(file)) {
            Ok(image) => Some(Arc::new(image)),
            Err(e) => {
                tracing::error!(event = "policy-load-failed", source = %file, error = %e,
                    "cannot load built-in policy {file}: {e}");
                None
            }
        })
        .collect()
}

/// The bytes of a built-in by policy file name without extension ("tcp-buffer").
pub fn bytes_of(name: &str) -> Option<&'static [u8]> {
    BUILTIN_POLICIES.iter().find(|(file, _)| file.trim_end_matches(".wasm") == name).map(|(_, bytes)| *bytes)
}
