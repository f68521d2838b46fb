//! The records of the journal, one JSON object per line, told apart by their
//! `kind`. A change is two records: an intent, written and synced before the
//! kernel is touched, then its outcome (`applied`, `rolled-back` or `failed`)
//! with the same `seq`. An intent without an outcome means the process died
//! between the two; the write may or may not have happened.
//!
//! A per-destination change (an entry of the sockops `peers` map) is an
//! intent of its own kind, `peer-intent`, with the same outcomes. The map
//! lives only as long as the process that made it, so a later
//! `session-start` ends every such entry (see [`super::state`]).

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::history::{PeerEntry, TunableHistory, TunableKey};
use crate::peer::PeerSettings;
use crate::sysctl::Value;

/// Where the kernel publishes an identifier that changes on every boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// A process opened the journal. The boot identifier tells whether the
    /// records before it were made since the kernel last started: sysctl
    /// values do not survive a reboot, so older changes are void.
    SessionStart {
        pid: u32,
        time: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_id: Option<String>,
        /// When the kernel started (milliseconds since the Unix epoch): the
        /// same boot when the ids differ only because a container fakes its
        /// own for some mount namespaces and not others.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        booted_at: Option<u64>,
    },
    /// A policy's change is about to be written.
    Intent(Intent),
    /// The write of `seq` took effect (read back equal).
    Applied { seq: u64, time: u64 },
    /// The write of `seq` failed, or read back different. `found` is what the
    /// kernel held afterwards, when it could be read.
    Failed {
        seq: u64,
        time: u64,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        found: Option<Value>,
    },
    /// A per-destination entry is about to be set or removed.
    PeerIntent(PeerIntent),
    /// An original value is about to be written back.
    RollbackIntent(RollbackIntent),
    /// The restoring write of `seq` took effect.
    RolledBack { seq: u64, time: u64 },
    /// Every change in effect was dealt with; later changes start from fresh
    /// originals.
    RollbackComplete { time: u64 },
    /// What every record before it added up to; the first record of a
    /// compacted journal, which replaces them all.
    Snapshot(Box<Snapshot>),
}

/// The fold of a journal, as one record (see [`super::state`] for what each
/// part means). Records still waiting for their outcome are kept whole, so
/// an outcome after the snapshot finds its intent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken (milliseconds since the Unix epoch).
    pub time: u64,
    pub boot_id: Option<String>,
    #[serde(default)]
    pub booted_at: Option<u64>,
    pub session_pid: Option<u32>,
    pub max_seq: u64,
    pub voided_by_reboot: usize,
    pub tunables: Vec<(TunableKey, TunableHistory)>,
    pub scenarios: BTreeMap<String, u32>,
    pub pending: Vec<Record>,
    pub peers: Vec<PeerEntry>,
    pub peers_ended: Vec<PeerEntry>,
}

/// The policy name under which a value written on the administrator's
/// behalf is journaled; rollback leaves such values alone (they are theirs).
pub const ADMINISTRATOR: &str = "administrator";

/// What a change is about to do, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    pub policy: String,
    /// The namespace's cookie, valid for this boot.
    pub netns: u64,
    /// The namespace's name, which outlives a crash of the daemon.
    pub netns_name: String,
    pub tunable: String,
    pub old: Value,
    pub new: Value,
    pub scenario: String,
    pub reason: String,
}

/// A per-destination change about to be made in the sockops `peers` map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIntent {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    pub policy: String,
    /// The namespace's cookie, valid for this boot.
    pub netns: u64,
    pub netns_name: String,
    /// The peer prefix, as `10.0.0.0/8` or `fd00::/8`.
    pub peer: String,
    /// What new connections to the peer get; `None` removes the entry.
    pub settings: Option<PeerSettings>,
    pub scenario: String,
    pub reason: String,
}

/// A restoring write about to happen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackIntent {
    pub seq: u64,
    pub time: u64,
    pub netns: u64,
    pub netns_name: String,
    pub tunable: String,
    pub from: Value,
    pub to: Value,
}

impl Record {
    /// The sequence number of an intent or outcome.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Record::Intent(Intent { seq, .. })
            | Record::PeerIntent(PeerIntent { seq, .. })
            | Record::RollbackIntent(RollbackIntent { seq, .. })
            | Record::Applied { seq, .. }
            | Record::Failed { seq, .. }
            | Record::RolledBack { seq, .. } => Some(*seq),
            Record::SessionStart { .. } | Record::RollbackComplete { .. } | Record::Snapshot(_) => None,
        }
    }

    /// The session-start record of this process, now.
    pub fn session_start() -> Record {
        Record::SessionStart {
            pid: std::process::id(),
            time: now_ms(),
            boot_id: current_boot_id(),
            booted_at: current_boot_time_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// When the kernel started, in milliseconds since the Unix epoch: the wall
/// clock less the time since boot. It moves with the wall clock (NTP), so it
/// is compared with a margin.
pub fn current_boot_time_ms() -> Option<u64> {
    let mut since_boot = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into a live one.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut since_boot) } != 0 {
        return None;
    }
    let since_boot_ms =
        u64::try_from(since_boot.tv_sec).ok()?.checked_mul(1000)? + u64::try_from(since_boot.tv_nsec).ok()? / 1_000_000;
    now_ms().checked_sub(since_boot_ms).filter(|&t| t > 0)
}

/// This boot's identifier, if the kernel offers one.
pub fn current_boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID).ok().map(|id| id.trim().to_string()).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_one_flat_object_per_record_with_its_kind() {
        let record = Record::Applied { seq: 7, time: 1 };
        assert_eq!(serde_json::to_string(&record).expect("encode"), r#"{"kind":"applied","seq":7,"time":1}"#);
        let intent = Record::Intent(Intent {
            seq: 1,
            time: 2,
            policy: "tcp-buffer".into(),
            netns: 3,
            netns_name: "rx".into(),
            tunable: "net.ipv4.tcp_rmem".into(),
            old: Value::Integers(vec![4096, 131072, 6291456]),
            new: Value::Integers(vec![4096, 131072, 7864320]),
            scenario: "need to increase TCP buffer size(s)".into(),
            reason: "receive buffers reached the limit".into(),
        });
        let line = serde_json::to_string(&intent).expect("encode");
        assert!(line.starts_with(r#"{"kind":"intent","seq":1,"#), "{line}");
        assert!(line.contains(r#""old":{"integers":[4096,131072,6291456]}"#), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).expect("decode"), intent);
    }

    #[test]
    fn reads_when_the_kernel_started() {
        let first = current_boot_time_ms().expect("boot time");
        let again = current_boot_time_ms().expect("boot time");
        assert!(first < now_ms() && first.abs_diff(again) < 50, "{first} {again}");
    }

    #[test]
    fn reads_the_boot_id() {
        let id = current_boot_id().expect("boot id");
        assert_eq!(id.len(), 36, "{id}");
    }
}
