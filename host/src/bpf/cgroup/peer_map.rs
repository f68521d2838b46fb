//! The host's handle on the per-destination settings map (`peers` in
//! `bpf/sockops.bpf.c`), `Send + Sync`; only the host writes it. What it
//! holds is [`crate::peer`]'s vocabulary.

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::peer::{PeerError, PeerPrefix, PeerSettings};

/// The host's handle on the `peers` map; shareable between threads.
pub struct PeerMap {
    map: MapHandle,
}

impl PeerMap {
    pub(crate) fn new(map: MapHandle) -> PeerMap {
        PeerMap { map }
    }

    /// Adds or replaces the settings for a prefix in a namespace.
    pub fn set(&self, netns: u64, prefix: &PeerPrefix, settings: &PeerSettings) -> Result<(), PeerError> {
        let value = settings.encode()?;
        self.map.update(&prefix.key(netns), &value, MapFlags::ANY).map_err(|e| PeerError::Map {
            operation: "update",
            prefix: prefix.to_string(),
            reason: e.to_string(),
        })
    }

    /// Removes the settings for a prefix; removing one that is absent is not an error.
    pub fn clear(&self, netns: u64, prefix: &PeerPrefix) -> Result<(), PeerError> {
        match self.map.delete(&prefix.key(netns)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PeerError::Map { operation: "delete", prefix: prefix.to_string(), reason: e.to_string() }),
        }
    }

    /// Whether the map holds an entry for exactly this prefix.
    pub fn contains(&self, netns: u64, prefix: &PeerPrefix) -> bool {
        matches!(self.map.lookup(&prefix.key(netns), MapFlags::ANY), Ok(Some(_)))
    }
}
