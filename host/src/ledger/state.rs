//! What the journal's records add up to: for each tunable in each namespace,
//! its original value and the last value the host wrote; for each scenario,
//! how many changes it caused. A pure fold over records, so it is the same
//! whether built while running or replayed after a crash.
//!
//! The state starts empty after a `rollback-complete` record, and after a
//! `session-start` from a different boot than the one before it: a reboot
//! resets every sysctl, so older changes are no longer in effect.
//!
//! Per-destination entries (the sockops `peers` map) are folded apart: the
//! map is not pinned, so it dies with the process that filled it. Every
//! `session-start` therefore moves the entries in effect to the ended list:
//! nothing is left of them to undo, only to report.

use std::collections::{BTreeMap, HashMap};

pub use super::history::{PeerEntry, TunableHistory, TunableKey};
use super::record::{Intent, PeerIntent, Record, RollbackIntent, Snapshot};
use crate::peer::PeerSettings;
#[cfg(test)]
use crate::sysctl::Value;

/// Distinct scenarios counted; more are counted under [`OTHER_SCENARIOS`].
const MAX_SCENARIOS: usize = 256;
pub const OTHER_SCENARIOS: &str = "(other scenarios)";
/// Entries of stopped processes remembered for the report, newest kept.
const MAX_PEERS_ENDED: usize = 4096;

/// An intent waiting for its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Change(Intent),
    Peer(PeerIntent),
    Restore(RollbackIntent),
}

/// How far apart two readings of the kernel's start time may be and still
/// name one boot: the wall clock they derive from is stepped by NTP, and a
/// reboot takes longer than this.
const BOOT_TIME_SLACK_MS: u64 = 10_000;

/// Whether two start times (when both are known) name the same boot.
fn same_boot_time(previous: Option<u64>, current: Option<u64>) -> bool {
    matches!((previous, current), (Some(a), Some(b)) if a.abs_diff(b) <= BOOT_TIME_SLACK_MS)
}

/// The fold of the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DerivedState {
    tunables: BTreeMap<TunableKey, TunableHistory>,
    scenarios: BTreeMap<String, u32>,
    pending: HashMap<u64, Pending>,
    boot_id: Option<String>,
    booted_at: Option<u64>,
    max_seq: u64,
    /// Tunables whose changes a reboot undid (counted when the state resets).
    voided_by_reboot: usize,
    /// Per-destination entries in the map of the process that journals now,
    /// by (netns name, peer).
    peers: BTreeMap<(String, String), PeerEntry>,
    /// Entries of processes that have stopped since (their map went with them).
    peers_ended: Vec<PeerEntry>,
    /// The pid of the last `session-start`.
    session_pid: Option<u32>,
}

impl DerivedState {
    /// Folds a list of records from the start.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> DerivedState {
        let mut state = DerivedState::default();
        for record in records {
            state.apply(record);
        }
        state
    }

    /// Folds one more record.
    pub fn apply(&mut self, record: &Record) {
        if let Some(seq) = record.seq() {
            self.max_seq = self.max_seq.max(seq);
        }
        match record {
            Record::SessionStart { boot_id, pid, booted_at, .. } => {
                self.end_peer_entries();
                self.session_pid = Some(*pid);
                if let (Some(previous), Some(current)) = (&self.boot_id, boot_id)
                    && previous != current
                    && !same_boot_time(self.booted_at, *booted_at)
                {
                    self.voided_by_reboot += self.tunables.values().filter(|t| t.is_changed()).count();
                    self.reset();
                }
                if boot_id.is_some() {
                    self.boot_id.clone_from(boot_id);
                }
                if booted_at.is_some() {
                    self.booted_at = *booted_at;
                }
            }
            Record::Intent(intent) => {
                let key = TunableKey { netns: intent.netns_name.clone(), tunable: intent.tunable.clone() };
                let history = self.tunables.entry(key).or_insert_with(|| TunableHistory {
                    netns_cookie: intent.netns,
                    original: intent.old.clone(),
                    last_written: None,
                    unconfirmed: None,
                    changes: 0,
                    last_policy: intent.policy.clone(),
                    last_scenario: String::new(),
                    last_reason: String::new(),
                    last_time: 0,
                    last_seq: intent.seq,
                    before_run: None,
                });
                history.netns_cookie = intent.netns;
                history.unconfirmed = Some(intent.new.clone());
                history.last_seq = intent.seq;
                self.pending.insert(intent.seq, Pending::Change(intent.clone()));
            }
            Record::PeerIntent(intent) => {
                self.pending.insert(intent.seq, Pending::Peer(intent.clone()));
            }
            Record::RollbackIntent(restore) => {
                self.pending.insert(restore.seq, Pending::Restore(restore.clone()));
            }
            Record::Applied { seq, time } => match self.pending.remove(seq) {
                Some(Pending::Change(intent)) => {
                    if let Some(history) = self.tunables.get_mut(&key_of(&intent.netns_name, &intent.tunable)) {
                        if history.changes == 0 || history.last_policy != intent.policy {
                            history.before_run = Some(intent.old.clone());
                        }
                        history.last_written = Some(intent.new.clone());
                        history.unconfirmed = None;
                        history.changes += 1;
                        history.last_policy.clone_from(&intent.policy);
                        history.last_scenario.clone_from(&intent.scenario);
                        history.last_reason.clone_from(&intent.reason);
                        history.last_time = *time;
                    }
                    *self.scenarios.entry(intent.scenario).or_default() += 1;
                }
                Some(Pending::Peer(intent)) => self.apply_peer(&intent, *time),
                Some(Pending::Restore(_)) | None => {}
            },
            Record::RolledBack { seq, .. } => {
                if let Some(Pending::Restore(restore)) = self.pending.remove(seq) {
                    self.tunables.remove(&key_of(&restore.netns_name, &restore.tunable));
                }
            }
            Record::Failed { seq, found, .. } => match self.pending.remove(seq) {
                Some(Pending::Change(intent)) => {
                    if let Some(history) = self.tunables.get_mut(&key_of(&intent.netns_name, &intent.tunable)) {
                        history.unconfirmed = None;
                        // A write that read back different still changed the
                        // kernel: that value is ours to recognise and undo.
                        if let Some(found) = found.as_ref().filter(|found| **found != intent.old) {
                            history.last_written = Some(found.clone());
                        }
                    }
                }
                Some(Pending::Restore(restore)) => {
                    if let Some(history) = self.tunables.get_mut(&key_of(&restore.netns_name, &restore.tunable))
                        && let Some(found) = found.as_ref().filter(|found| **found != restore.from)
                    {
                        history.last_written = Some(found.clone());
                    }
                }
                // The map refused the update or delete: it holds what it held.
                Some(Pending::Peer(_)) | None => {}
            },
            Record::RollbackComplete { .. } => self.reset(),
            Record::Snapshot(snapshot) => *self = DerivedState::restore(snapshot),
        }
        self.bound_history();
    }

    /// The fold as one record, to compact the journal with.
    pub fn snapshot(&self, time: u64) -> Snapshot {
        let mut pending: Vec<(u64, Record)> = self
            .pending
            .iter()
            .map(|(seq, pending)| {
                let record = match pending {
                    Pending::Change(intent) => Record::Intent(intent.clone()),
                    Pending::Peer(intent) => Record::PeerIntent(intent.clone()),
                    Pending::Restore(restore) => Record::RollbackIntent(restore.clone()),
                };
                (*seq, record)
            })
            .collect();
        pending.sort_by_key(|(seq, _)| *seq);
        Snapshot {
            time,
            boot_id: self.boot_id.clone(),
            booted_at: self.booted_at,
            session_pid: self.session_pid,
            max_seq: self.max_seq,
            voided_by_reboot: self.voided_by_reboot,
            tunables: self.tunables.iter().map(|(k, h)| (k.clone(), h.clone())).collect(),
            scenarios: self.scenarios.clone(),
            pending: pending.into_iter().map(|(_, record)| record).collect(),
            peers: self.peers.values().cloned().collect(),
            peers_ended: self.peers_ended.clone(),
        }
    }

    fn restore(snapshot: &Snapshot) -> DerivedState {
        let pending = snapshot
            .pending
            .iter()
            .filter_map(|record| match record {
                Record::Intent(intent) => Some((intent.seq, Pending::Change(intent.clone()))),
                Record::PeerIntent(intent) => Some((intent.seq, Pending::Peer(intent.clone()))),
                Record::RollbackIntent(restore) => Some((restore.seq, Pending::Restore(restore.clone()))),
                _ => None,
            })
            .collect();
        DerivedState {
            tunables: snapshot.tunables.iter().cloned().collect(),
            scenarios: snapshot.scenarios.clone(),
            pending,
            boot_id: snapshot.boot_id.clone(),
            booted_at: snapshot.booted_at,
            max_seq: snapshot.max_seq,
            voided_by_reboot: snapshot.voided_by_reboot,
            peers: snapshot.peers.iter().map(|p| ((p.netns.clone(), p.peer.clone()), p.clone())).collect(),
            peers_ended: snapshot.peers_ended.clone(),
            session_pid: snapshot.session_pid,
        }
    }

    /// What is only reported (scenario counts, entries of stopped
    /// processes) is kept within bounds, so that the fold, and the snapshot
    /// that compacts the journal, cannot grow without end however many
    /// changes are made.
    fn bound_history(&mut self) {
        if self.scenarios.len() > MAX_SCENARIOS {
            let excess: Vec<String> =
                self.scenarios.keys().filter(|k| *k != OTHER_SCENARIOS).skip(MAX_SCENARIOS - 1).cloned().collect();
            for key in excess {
                let count = self.scenarios.remove(&key).unwrap_or(0);
                *self.scenarios.entry(OTHER_SCENARIOS.to_string()).or_default() += count;
            }
        }
        if self.peers_ended.len() > MAX_PEERS_ENDED {
            let drop = self.peers_ended.len() - MAX_PEERS_ENDED;
            self.peers_ended.drain(..drop);
        }
    }

    fn reset(&mut self) {
        self.tunables.clear();
        self.scenarios.clear();
        self.pending.clear();
        self.peers.clear();
        self.peers_ended.clear();
    }

    /// A confirmed per-destination change: the entry is set or removed.
    fn apply_peer(&mut self, intent: &PeerIntent, time: u64) {
        let key = (intent.netns_name.clone(), intent.peer.clone());
        match &intent.settings {
            Some(settings) => {
                self.peers.insert(key, peer_entry(intent, settings, time, self.session_pid, true));
            }
            None => {
                self.peers.remove(&key);
            }
        }
    }

    /// A new process started: the map of the one before is gone, and with
    /// it every entry it held (or may have held, if it stopped mid-write).
    fn end_peer_entries(&mut self) {
        let mut ended: Vec<PeerEntry> = std::mem::take(&mut self.peers).into_values().collect();
        let mut unconfirmed: Vec<u64> = self
            .pending
            .iter()
            .filter_map(|(seq, pending)| matches!(pending, Pending::Peer(_)).then_some(*seq))
            .collect();
        unconfirmed.sort_unstable();
        for seq in unconfirmed {
            if let Some(Pending::Peer(intent)) = self.pending.remove(&seq)
                && let Some(settings) = &intent.settings
            {
                ended.push(peer_entry(&intent, settings, intent.time, self.session_pid, false));
            }
        }
        self.peers_ended.extend(ended);
    }
    /// Every tunable with a history, by namespace then name.
    pub fn tunables(&self) -> &BTreeMap<TunableKey, TunableHistory> {
        &self.tunables
    }

    /// The tunables the kernel may hold a host-written value of, most
    /// recently changed first (the order to undo them in).
    pub fn changed(&self) -> Vec<(&TunableKey, &TunableHistory)> {
        let mut changed: Vec<_> = self.tunables.iter().filter(|(_, history)| history.is_changed()).collect();
        changed.sort_by_key(|(_, history)| std::cmp::Reverse(history.last_seq));
        changed
    }

    /// Changes journaled but never confirmed or refused: the process died
    /// between the intent and its outcome.
    pub fn unresolved(&self) -> Vec<Intent> {
        let mut intents: Vec<Intent> = self
            .pending
            .values()
            .filter_map(|p| match p {
                Pending::Change(intent) => Some(intent.clone()),
                Pending::Peer(_) | Pending::Restore(_) => None,
            })
            .collect();
        intents.sort_by_key(|i| i.seq);
        intents
    }

    pub fn get(&self, netns: &str, tunable: &str) -> Option<&TunableHistory> {
        self.tunables.get(&key_of(netns, tunable))
    }

    /// Changes that took effect, per scenario.
    pub fn scenarios(&self) -> &BTreeMap<String, u32> {
        &self.scenarios
    }

    /// The highest sequence number seen; the next record uses one more.
    pub fn max_seq(&self) -> u64 {
        self.max_seq
    }

    /// Tunables whose recorded changes a reboot undid.
    pub fn voided_by_reboot(&self) -> usize {
        self.voided_by_reboot
    }

    /// The per-destination entries in effect in this process's map, by
    /// namespace then peer.
    pub fn peers(&self) -> impl Iterator<Item = &PeerEntry> {
        self.peers.values()
    }

    /// The entry for one peer in one namespace, if in effect.
    pub fn peer(&self, netns: &str, peer: &str) -> Option<&PeerEntry> {
        self.peers.get(&(netns.to_string(), peer.to_string()))
    }

    /// Entries that ended with the process that made them, since the last
    /// complete rollback.
    pub fn peers_ended(&self) -> &[PeerEntry] {
        &self.peers_ended
    }
}

fn peer_entry(intent: &PeerIntent, settings: &PeerSettings, time: u64, pid: Option<u32>, confirmed: bool) -> PeerEntry {
    PeerEntry {
        netns_cookie: intent.netns,
        netns: intent.netns_name.clone(),
        peer: intent.peer.clone(),
        settings: settings.clone(),
        policy: intent.policy.clone(),
        scenario: intent.scenario.clone(),
        reason: intent.reason.clone(),
        time,
        pid,
        confirmed,
    }
}

fn key_of(netns: &str, tunable: &str) -> TunableKey {
    TunableKey { netns: netns.to_string(), tunable: tunable.to_string() }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ints(values: &[i64]) -> Value {
        Value::Integers(values.to_vec())
    }

    pub(crate) fn intent(seq: u64, netns: &str, tunable: &str, old: Value, new: Value, scenario: &str) -> Record {
        Record::Intent(Intent {
            seq,
            time: seq * 10,
            policy: "tcp-buffer".into(),
            netns: 42,
            netns_name: netns.into(),
            tunable: tunable.into(),
            old,
            new,
            scenario: scenario.into(),
            reason: "buffers reached the limit".into(),
        })
    }

    pub(crate) fn applied(seq: u64) -> Record {
        Record::Applied { seq, time: seq * 10 + 1 }
    }

    fn session(boot: &str) -> Record {
        Record::SessionStart { pid: 1, time: 0, boot_id: Some(boot.into()), booted_at: None }
    }

    const RMEM: &str = "net.ipv4.tcp_rmem";
    const GROW: &str = "need to increase TCP buffer size(s)";

    #[test]
    fn unresolved_lists_intents_without_outcome_and_last_change_keeps_why() {
        let records = [
            session("b1"),
            intent(1, "rx", RMEM, ints(&[4096, 131072, 100]), ints(&[4096, 131072, 125]), GROW),
            applied(1),
            intent(2, "rx", RMEM, ints(&[4096, 131072, 125]), ints(&[4096, 131072, 156]), GROW),
        ];
        let state = DerivedState::from_records(&records);
        let open: Vec<u64> = state.unresolved().iter().map(|i| i.seq).collect();
        assert_eq!(open, vec![2]);
        let history = state.get("rx", RMEM).expect("history");
        assert_eq!(history.last_scenario, GROW);
        assert_eq!(history.last_reason, "buffers reached the limit");
        assert_eq!(history.last_time, 11);
        let settled = DerivedState::from_records(records.iter().chain([&Record::Failed {
            seq: 2,
            time: 30,
            error: "interrupted".into(),
            found: None,
        }]));
        assert!(settled.unresolved().is_empty());
        let history = settled.get("rx", RMEM).expect("history");
        assert_eq!(history.last_written, Some(ints(&[4096, 131072, 125])), "a refused intent is not the host's value");
        assert_eq!(history.unconfirmed, None);
    }

    #[test]
    fn a_run_of_changes_by_one_policy_remembers_where_it_began() {
        let by = |record: Record, policy: &str| match record {
            Record::Intent(mut intent) => {
                intent.policy = policy.into();
                Record::Intent(intent)
            }
            other => other,
        };
        let records = [
            session("b1"),
            by(intent(1, "rx", RMEM, ints(&[4096, 131072, 100]), ints(&[4096, 131072, 125]), GROW), "tcp-buffer"),
            applied(1),
            by(
                intent(2, "rx", RMEM, ints(&[4096, 131072, 125]), ints(&[4096, 131072, 200]), GROW),
                "tcp-buffer (canary)",
            ),
            applied(2),
            by(
                intent(3, "rx", RMEM, ints(&[4096, 131072, 200]), ints(&[4096, 131072, 300]), GROW),
                "tcp-buffer (canary)",
            ),
            applied(3),
        ];
        let history = DerivedState::from_records(&records).get("rx", RMEM).cloned().expect("history");
        assert_eq!(
            history.before_run,
            Some(ints(&[4096, 131072, 125])),
            "the canary's run began at the current version's value"
        );
        assert_eq!(history.original, ints(&[4096, 131072, 100]));
        assert_eq!(history.last_policy, "tcp-buffer (canary)");
    }

    #[test]
    fn original_is_the_old_value_of_the_first_intent_and_last_is_the_last_applied() {
        let records = [
            session("b1"),
            intent(1, "rx", RMEM, ints(&[4096, 131072, 100]), ints(&[4096, 131072, 125]), GROW),
            applied(1),
            intent(2, "rx", RMEM, ints(&[4096, 131072, 125]), ints(&[4096, 131072, 156]), GROW),
            applied(2),
        ];
        let state = DerivedState::from_records(&records);
        let history = state.get("rx", RMEM).expect("history");
        assert_eq!(history.original, ints(&[4096, 131072, 100]));
        assert_eq!(history.last_written, Some(ints(&[4096, 131072, 156])));
        assert_eq!(history.unconfirmed, None);
        assert_eq!(history.changes, 2);
        assert_eq!(state.scenarios().get(GROW), Some(&2));
        assert_eq!(state.max_seq(), 2);
    }

    #[test]
    fn an_intent_without_outcome_is_unconfirmed() {
        let records = [session("b1"), intent(1, "rx", RMEM, ints(&[1, 2, 3]), ints(&[1, 2, 4]), GROW)];
        let state = DerivedState::from_records(&records);
        let history = state.get("rx", RMEM).expect("history");
        assert_eq!(history.last_written, None);
        assert_eq!(history.unconfirmed, Some(ints(&[1, 2, 4])));
        assert!(history.holds_host_value(&ints(&[1, 2, 4])));
        assert_eq!(state.changed().len(), 1);
        assert!(state.scenarios().is_empty());
    }

    #[test]
    fn a_failed_write_that_left_the_kernel_unchanged_changes_nothing() {
        let records = [
            intent(1, "rx", RMEM, ints(&[1, 2, 3]), ints(&[0, 0, 0]), GROW),
            Record::Failed { seq: 1, time: 0, error: "EINVAL".into(), found: Some(ints(&[1, 2, 3])) },
        ];
        let state = DerivedState::from_records(&records);
        assert!(state.changed().is_empty());
        assert!(state.scenarios().is_empty());
    }

    #[test]
    fn a_write_that_read_back_different_is_still_undone() {
        let records = [
            intent(1, "rx", RMEM, ints(&[1, 2, 3]), ints(&[1, 2, 9]), GROW),
            Record::Failed { seq: 1, time: 0, error: "read back 1 2 8".into(), found: Some(ints(&[1, 2, 8])) },
        ];
        let state = DerivedState::from_records(&records);
        assert_eq!(state.get("rx", RMEM).and_then(|h| h.last_written.clone()), Some(ints(&[1, 2, 8])));
    }

    #[test]
    fn a_restored_tunable_leaves_the_state_and_a_complete_rollback_clears_it() {
        let restore = Record::RollbackIntent(RollbackIntent {
            seq: 2,
            time: 0,
            netns: 42,
            netns_name: "rx".into(),
            tunable: RMEM.into(),
            from: ints(&[1, 2, 4]),
            to: ints(&[1, 2, 3]),
        });
        let mut records = vec![
            intent(1, "rx", RMEM, ints(&[1, 2, 3]), ints(&[1, 2, 4]), GROW),
            applied(1),
            intent(3, "init", RMEM, ints(&[1, 2, 3]), ints(&[1, 2, 5]), GROW),
            applied(3),
            restore,
            Record::RolledBack { seq: 2, time: 0 },
        ];
        let state = DerivedState::from_records(&records);
        assert!(state.get("rx", RMEM).is_none());
        assert!(state.get("init", RMEM).is_some());
        records.push(Record::RollbackComplete { time: 0 });
        records.push(intent(4, "init", RMEM, ints(&[1, 2, 5]), ints(&[1, 2, 6]), GROW));
        records.push(applied(4));
        let state = DerivedState::from_records(&records);
        assert_eq!(state.get("init", RMEM).map(|h| h.original.clone()), Some(ints(&[1, 2, 5])));
        assert_eq!(state.scenarios().get(GROW), Some(&1));
        assert_eq!(state.max_seq(), 4);
    }

    #[test]
    fn a_reboot_voids_earlier_changes() {
        let records = [
            session("b1"),
            intent(1, "init", RMEM, ints(&[1, 2, 3]), ints(&[1, 2, 4]), GROW),
            applied(1),
            session("b1"),
        ];
        assert_eq!(DerivedState::from_records(&records).changed().len(), 1);
        let mut records = records.to_vec();
        records.push(session("b2"));
        let state = DerivedState::from_records(&records);
        assert!(state.changed().is_empty());
        assert_eq!(state.voided_by_reboot(), 1);
        assert_eq!(state.max_seq(), 1);
    }

    #[test]
    fn ids_that_differ_at_one_boot_time_are_one_boot() {
        // A container that fakes its boot id for some mount namespaces only.
        let at = |boot: &str, booted_at: u64| Record::SessionStart {
            pid: 1,
            time: 0,
            boot_id: Some(boot.into()),
            booted_at: Some(booted_at),
        };
        let records = [
            at("host", 1_000_000),
            intent(1, "init", RMEM, ints(&[1]), ints(&[2]), GROW),
            applied(1),
            at("fake", 1_003_000),
        ];
        let state = DerivedState::from_records(&records);
        assert_eq!(state.changed().len(), 1, "the same boot, 3 s of clock apart");
        assert_eq!(state.voided_by_reboot(), 0);
        let mut rebooted = records.to_vec();
        rebooted.push(at("after", 1_100_000));
        assert!(DerivedState::from_records(&rebooted).changed().is_empty(), "another id and start time: a reboot");
    }

    #[test]
    fn undoes_the_most_recent_change_first() {
        let records = [
            intent(1, "a", RMEM, ints(&[1]), ints(&[2]), GROW),
            applied(1),
            intent(2, "b", RMEM, ints(&[1]), ints(&[2]), GROW),
            applied(2),
        ];
        let state = DerivedState::from_records(&records);
        let order: Vec<&str> = state.changed().iter().map(|(key, _)| key.netns.as_str()).collect();
        assert_eq!(order, ["b", "a"]);
    }

    pub(crate) fn peer_intent(seq: u64, peer: &str, congestion: Option<&str>) -> Record {
        Record::PeerIntent(PeerIntent {
            seq,
            time: seq * 10,
            policy: "tcp-cong".into(),
            netns: 42,
            netns_name: "rx".into(),
            peer: peer.into(),
            settings: congestion.map(|c| PeerSettings { congestion: Some(c.into()), ..Default::default() }),
            scenario: "per-destination congestion".into(),
            reason: "the peer is far away".into(),
        })
    }

    #[test]
    fn peer_entries_live_until_the_next_session_and_then_are_ended() {
        let mut records = vec![
            Record::SessionStart { pid: 7, time: 0, boot_id: Some("b1".into()), booted_at: None },
            peer_intent(1, "10.0.0.2/32", Some("reno")),
            applied(1),
            peer_intent(2, "10.0.0.3/32", Some("bbr")),
            applied(2),
            peer_intent(3, "10.0.0.3/32", None),
            applied(3),
            peer_intent(4, "10.0.0.4/32", Some("bbr")),
            Record::Failed { seq: 4, time: 41, error: "map full".into(), found: None },
            peer_intent(5, "10.0.0.5/32", Some("reno")),
        ];
        let state = DerivedState::from_records(&records);
        let live: Vec<&str> = state.peers().map(|p| p.peer.as_str()).collect();
        assert_eq!(live, ["10.0.0.2/32"], "set, cleared, refused and unconfirmed entries are not in effect");
        let entry = state.peer("rx", "10.0.0.2/32").expect("entry");
        assert_eq!((entry.pid, entry.confirmed, entry.time), (Some(7), true, 11));
        assert!(state.changed().is_empty() && state.unresolved().is_empty(), "no sysctl to restore or settle");

        records.push(Record::SessionStart { pid: 8, time: 100, boot_id: Some("b1".into()), booted_at: None });
        let state = DerivedState::from_records(&records);
        assert_eq!(state.peers().count(), 0, "the map went with process 7");
        let ended: Vec<(&str, bool)> = state.peers_ended().iter().map(|p| (p.peer.as_str(), p.confirmed)).collect();
        assert_eq!(ended, [("10.0.0.2/32", true), ("10.0.0.5/32", false)]);
        records.push(Record::RollbackComplete { time: 101 });
        assert!(DerivedState::from_records(&records).peers_ended().is_empty());
    }
}
