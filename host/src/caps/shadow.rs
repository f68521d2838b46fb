//! Shadow versions: a policy file that runs beside the live version of its
//! name (or alone, as pure advice), on the same events, through the same
//! checks, and never changes anything. Its kernel side ([`ShadowKernel`])
//! reads the live values and drops every accepted change; its book
//! ([`ShadowBook`]) pairs what it asked for with what the live version
//! asked for on the same batch of events, logs each of its changes as
//! `shadow-change` with the live version's answer beside it, and counts
//! agreements for `wasmtune status`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::actuate::{ActuateError, PeerEntryChange, SysctlChange};
use crate::caps::kernel::KernelSide;
use crate::sysctl::Value;

/// A batch whose other side never reports (a faulted call, a stop) is
/// settled without it after this long.
pub const PAIRING_TIMEOUT: Duration = Duration::from_secs(5);
/// Differences kept for `status`.
pub const KEPT_DIFFERENCES: usize = 8;

/// The live kernel, read-only: every change is accepted and dropped.
pub struct ShadowKernel {
    pub live: Arc<dyn KernelSide>,
}

impl KernelSide for ShadowKernel {
    fn is_known_tuned(&self, netns: u64) -> bool {
        self.live.is_known_tuned(netns)
    }

    fn netns_name(&self, netns: u64) -> String {
        self.live.netns_name(netns)
    }

    fn read(&self, netns: u64, tunable: &str) -> Result<Value, ActuateError> {
        self.live.read(netns, tunable)
    }

    fn is_overridden(&self, netns: u64, tunable: &str) -> bool {
        self.live.is_overridden(netns, tunable)
    }

    fn submit(&self, _change: SysctlChange) -> bool {
        true
    }

    fn has_peer_map(&self) -> bool {
        self.live.has_peer_map()
    }

    fn submit_peer(&self, _change: PeerEntryChange) -> bool {
        true
    }

    fn available_congestion(&self) -> Vec<String> {
        self.live.available_congestion()
    }

    fn now(&self) -> Instant {
        self.live.now()
    }
}

/// One accepted request, as the two sides are compared by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Decision {
    pub netns: String,
    pub tunable: String,
    pub value: String,
}

impl Decision {
    pub fn of(change: &SysctlChange, netns: String) -> Decision {
        Decision { netns, tunable: change.tunable.clone(), value: change.value.to_string() }
    }
}

/// A batch on which the two sides decided differently.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    pub batch: u64,
    pub shadow: Vec<Decision>,
    pub live: Vec<Decision>,
}

#[derive(Default)]
struct Pending {
    /// Whether the live version received this batch too.
    live_expected: bool,
    live: Option<Vec<Decision>>,
    shadow: Option<Vec<Decision>>,
    since: Option<Instant>,
}

/// Counts for `status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShadowCounts {
    /// Batches on which the shadow (or the live version beside it) asked for a change.
    pub decisions: u64,
    pub agreements: u64,
    pub disagreements: u64,
    /// Changes the shadow asked for that were dropped.
    pub changes: u64,
    pub last_differences: Vec<Difference>,
}

/// The pairing of one shadow with the live version of its name.
pub struct ShadowBook {
    pub name: String,
    pending: Mutex<BTreeMap<u64, Pending>>,
    decisions: AtomicU64,
    agreements: AtomicU64,
    disagreements: AtomicU64,
    changes: AtomicU64,
    differences: Mutex<VecDeque<Difference>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ShadowBook {
    pub fn new(name: &str) -> ShadowBook {
        ShadowBook {
            name: name.to_string(),
            pending: Mutex::default(),
            decisions: AtomicU64::new(0),
            agreements: AtomicU64::new(0),
            disagreements: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            differences: Mutex::default(),
        }
    }

    /// Batch `seq` goes to the shadow; to the live version too if `live`.
    /// Called before either is given it.
    pub fn expect(&self, seq: u64, live: bool) {
        lock(&self.pending)
            .insert(seq, Pending { live_expected: live, since: Some(Instant::now()), ..Pending::default() });
    }

    /// What the live version asked for on batch `seq`.
    pub fn live_done(&self, seq: u64, decisions: Vec<Decision>) {
        self.done(seq, |p| p.live = Some(decisions));
    }

    /// What the shadow asked for on batch `seq`.
    pub fn shadow_done(&self, seq: u64, decisions: Vec<Decision>) {
        self.changes.fetch_add(decisions.len() as u64, Ordering::Relaxed);
        self.done(seq, |p| p.shadow = Some(decisions));
    }

    fn done(&self, seq: u64, record: impl FnOnce(&mut Pending)) {
        let mut settled = Vec::new();
        {
            let mut pending = lock(&self.pending);
            let Some(entry) = pending.get_mut(&seq) else { return };
            record(entry);
            let complete = entry.shadow.is_some() && (entry.live.is_some() || !entry.live_expected);
            if complete && let Some(entry) = pending.remove(&seq) {
                settled.push((seq, entry));
            }
            let now = Instant::now();
            let stale: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| p.since.is_some_and(|at| now.duration_since(at) > PAIRING_TIMEOUT))
                .map(|(seq, _)| *seq)
                .collect();
            for seq in stale {
                if let Some(entry) = pending.remove(&seq) {
                    settled.push((seq, entry));
                }
            }
        }
        for (seq, entry) in settled {
            self.settle(seq, entry);
        }
    }

    fn settle(&self, seq: u64, entry: Pending) {
        let Some(mut shadow) = entry.shadow else { return };
        let live_known = entry.live.is_some();
        let mut live = entry.live.unwrap_or_default();
        shadow.sort();
        live.sort();
        if shadow.is_empty() && live.is_empty() {
            return;
        }
        self.decisions.fetch_add(1, Ordering::Relaxed);
        let agree = live_known && shadow == live;
        if entry.live_expected && live_known {
            let counter = if agree { &self.agreements } else { &self.disagreements };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let live_said = |decision: &Decision| -> String {
            if !entry.live_expected {
                return "no live version".to_string();
            }
            if !live_known {
                return "the live version did not answer".to_string();
            }
            live.iter()
                .find(|d| d.netns == decision.netns && d.tunable == decision.tunable)
                .map_or_else(|| "no change".to_string(), |d| d.value.clone())
        };
        for decision in &shadow {
            let live_did = live_said(decision);
            tracing::info!(event = "shadow-change", policy = %self.name, tunable = %decision.tunable,
                netns = %decision.netns, value = %decision.value, live = %live_did, agrees = agree, batch = seq,
                "shadow of {} would change {} in netns {} to ({}); the live version: {}; nothing was changed",
                self.name, decision.tunable, decision.netns, decision.value, live_did);
        }
        if entry.live_expected && live_known && !agree {
            let mut differences = lock(&self.differences);
            if differences.len() == KEPT_DIFFERENCES {
                differences.pop_front();
            }
            differences.push_back(Difference { batch: seq, shadow, live });
        }
    }

    pub fn counts(&self) -> ShadowCounts {
        ShadowCounts {
            decisions: self.decisions.load(Ordering::Relaxed),
            agreements: self.agreements.load(Ordering::Relaxed),
            disagreements: self.disagreements.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            last_differences: lock(&self.differences).iter().cloned().collect(),
        }
    }
}

/// Every shadow's book, by policy name: the live version's worker finds its
/// shadow's here.
#[derive(Default)]
pub struct ShadowBooks {
    books: Mutex<BTreeMap<String, Arc<ShadowBook>>>,
}

impl ShadowBooks {
    pub fn get(&self, name: &str) -> Option<Arc<ShadowBook>> {
        lock(&self.books).get(name).cloned()
    }

    pub fn insert(&self, book: Arc<ShadowBook>) {
        lock(&self.books).insert(book.name.clone(), book);
    }

    pub fn remove(&self, name: &str) {
        lock(&self.books).remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rmem(value: &str) -> Decision {
        Decision { netns: "blue".into(), tunable: "net.ipv4.tcp_rmem".into(), value: value.into() }
    }

    #[test]
    fn batches_are_paired_whichever_side_reports_first() {
        let book = ShadowBook::new("tcp-buffer");
        book.expect(1, true);
        book.live_done(1, vec![rmem("4096 131072 122880")]);
        book.shadow_done(1, vec![rmem("4096 131072 122880")]);
        book.expect(2, true);
        book.shadow_done(2, vec![rmem("4096 131072 147456")]);
        book.live_done(2, vec![rmem("4096 131072 153600")]);
        book.expect(3, true);
        book.shadow_done(3, Vec::new());
        book.live_done(3, Vec::new());
        let counts = book.counts();
        assert_eq!((counts.decisions, counts.agreements, counts.disagreements), (2, 1, 1));
        assert_eq!(counts.last_differences.len(), 1);
        assert_eq!(counts.last_differences[0].batch, 2);
    }

    #[test]
    fn alone_a_shadow_only_advises() {
        let book = ShadowBook::new("new-tuner");
        book.expect(7, false);
        book.shadow_done(7, vec![rmem("4096 131072 122880")]);
        let counts = book.counts();
        assert_eq!((counts.decisions, counts.agreements, counts.disagreements, counts.changes), (1, 0, 0, 1));
        book.live_done(8, vec![rmem("1 2 3")]);
        assert_eq!(book.counts().decisions, 1, "a batch the shadow never got is not compared");
    }
}
