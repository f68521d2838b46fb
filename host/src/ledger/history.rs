//! What the journal remembers of one tunable and of one per-destination
//! entry: the vocabulary shared by the fold ([`super::state`]) and the
//! compacted journal's snapshot ([`super::record::Snapshot`]).

use serde::{Deserialize, Serialize};

use crate::peer::PeerSettings;
use crate::sysctl::Value;

/// A tunable in a namespace, named as in the journal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TunableKey {
    pub netns: String,
    pub tunable: String,
}

/// The history of one tunable in one namespace since changes started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunableHistory {
    /// The namespace's cookie at the last change (valid for this boot).
    pub netns_cookie: u64,
    /// The value before the first change.
    pub original: Value,
    /// The value the host last wrote and read back (or, after a failed
    /// write, what the kernel held instead).
    pub last_written: Option<Value>,
    /// The new value of an intent with no outcome: the process died between
    /// journaling and confirming, so the kernel may hold it.
    pub unconfirmed: Option<Value>,
    /// Changes that took effect.
    pub changes: u32,
    pub last_policy: String,
    /// The scenario and reason of the last change that took effect.
    pub last_scenario: String,
    pub last_reason: String,
    /// When the last change took effect (milliseconds since the Unix epoch).
    pub last_time: u64,
    /// Sequence number of the last record that touched it, for ordering.
    pub last_seq: u64,
    /// The value before `last_policy`'s run of changes began: undoing a
    /// canary puts this back, not the original (the current version's
    /// earlier changes stand). Absent in journals written before it.
    #[serde(default)]
    pub before_run: Option<Value>,
}

impl TunableHistory {
    /// Whether the kernel may hold a value the host wrote.
    pub fn is_changed(&self) -> bool {
        self.last_written.is_some() || self.unconfirmed.is_some()
    }

    /// Whether `found` is a value this host may have left in the kernel.
    pub fn holds_host_value(&self, found: &Value) -> bool {
        self.last_written.as_ref() == Some(found) || self.unconfirmed.as_ref() == Some(found)
    }
}

/// A per-destination entry the host put in the sockops map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The namespace's cookie (valid for this boot) and name.
    pub netns_cookie: u64,
    pub netns: String,
    /// The peer prefix, as `10.0.0.0/8`.
    pub peer: String,
    pub settings: PeerSettings,
    /// The policy that set it, and why.
    pub policy: String,
    pub scenario: String,
    pub reason: String,
    /// When it was set (milliseconds since the Unix epoch).
    pub time: u64,
    /// The pid of the process whose map held it.
    pub pid: Option<u32>,
    /// False when the process stopped between journaling and confirming the
    /// write: the entry may or may not have reached the map.
    pub confirmed: bool,
}
