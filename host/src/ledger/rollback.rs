//! Undoing the host's changes: for each tunable the journal says the host
//! changed, write the original value back — but only where the kernel still
//! holds what the host wrote, since anything else is someone else's decision.
//!
//! The same procedure runs in the daemon (`--rollback`, through the actuator)
//! and offline after a crash (`wasmtune rollback`), where namespaces are found
//! by name and checked by cookie, because a name may since have been given to
//! a new namespace. A namespace that is gone took its values with it: that is
//! reported, not an error. When nothing failed, a `rollback-complete` record
//! lets the next run start from fresh originals.
//!
//! Per-destination entries are not written back: in the daemon the actuator
//! removes them from its map (journaled like any change) before the sysctls
//! are restored; after the process that made them stopped, its map is gone,
//! so they are only reported, in one line, as nothing left to undo.
//!
//! Which tunables to restore, and to what, is decided from the journal's
//! fold alone ([`plan`]): only network sysctls, only to an original value a
//! journal line recorded. The kernel is consulted only to leave a tunable
//! alone, never to pick a value.

use std::fmt;
use std::path::Path;

use super::record::{Record, RollbackIntent, now_ms};
use super::state::{DerivedState, PeerEntry, TunableHistory, TunableKey};
use super::write::{SysctlIntent, write_sysctl};
use super::{Ledger, LedgerError};
use crate::netns::{self, NetnsError, NetnsGuard, NetnsRegistry};
use crate::sysctl::{self, Value};

/// What a rollback did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollbackReport {
    pub restored: Vec<RestoredTunable>,
    pub skipped: Vec<(TunableKey, SkipReason)>,
    /// Nothing failed: every change is undone or no longer the host's to undo.
    pub complete: bool,
    /// Tunables whose journaled changes a reboot already undid.
    pub voided_by_reboot: usize,
    /// Per-destination entries this rollback removed from the daemon's map.
    pub peers_removed: Vec<PeerEntry>,
    /// Per-destination entries that ended with the process that made them.
    pub peers_ended: Vec<PeerEntry>,
}

/// A tunable written back to its original value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredTunable {
    pub netns: String,
    pub tunable: String,
    pub from: Value,
    pub to: Value,
}

/// Why a tunable was left as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Someone else wrote it after the host did; their value stays.
    ChangedSince { expected: Value, found: Value },
    /// It already holds its original value.
    AlreadyOriginal,
    /// Its last value was put back on the administrator's behalf: theirs.
    Administrators,
    /// This kernel (or namespace) no longer has it: nothing to restore.
    NotOnThisKernel,
    /// The namespace no longer exists (or its name now means another one).
    NamespaceGone { detail: String },
    /// `--dry-run`: the write that would have restored it.
    DryRun { from: Value, to: Value },
    /// Reading, journaling or writing failed; the rollback is incomplete.
    Failed { error: String },
    /// The journal names something the host never writes (not a network
    /// sysctl name): nothing of the host's to undo, and never written.
    NotTheHosts { detail: String },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ChangedSince { expected, found } => {
                write!(f, "changed by someone else since (wasmtune wrote ({expected}), it now holds ({found}))")
            }
            SkipReason::AlreadyOriginal => f.write_str("already holds its original value"),
            SkipReason::Administrators => f.write_str("it holds the administrator's value"),
            SkipReason::NotOnThisKernel => f.write_str("this kernel does not have it (nothing to restore)"),
            SkipReason::NamespaceGone { detail } => write!(f, "the namespace is gone: {detail}"),
            SkipReason::DryRun { from, to } => write!(f, "dry run: would restore ({from}) -> ({to})"),
            SkipReason::Failed { error } => write!(f, "restoring failed: {error}"),
            SkipReason::NotTheHosts { detail } => {
                write!(f, "the journal names no sysctl the host writes ({detail}); nothing to restore")
            }
        }
    }
}

impl RollbackReport {
    /// The report as log lines, each readable on its own.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for restored in &self.restored {
            lines.push(format!(
                "restored {} in netns {}: ({}) -> ({})",
                restored.tunable, restored.netns, restored.from, restored.to
            ));
        }
        for (key, reason) in &self.skipped {
            lines.push(format!("left {} in netns {} as it is: {reason}", key.tunable, key.netns));
        }
        for peer in &self.peers_removed {
            lines.push(format!(
                "removed per-destination settings for {} in netns {} (policy {}): new connections get the \
                 namespace's defaults; open ones keep {}",
                peer.peer, peer.netns, peer.policy, peer.settings
            ));
        }
        if !self.peers_ended.is_empty() {
            lines.push(ended_peers_line(&self.peers_ended));
        }
        if self.voided_by_reboot > 0 {
            lines.push(format!(
                "{} tunable(s) changed before the last reboot need no rollback (the kernel started afresh)",
                self.voided_by_reboot
            ));
        }
        if self.restored.is_empty()
            && self.skipped.is_empty()
            && self.peers_removed.is_empty()
            && self.peers_ended.is_empty()
        {
            lines.push("nothing to roll back".to_string());
        } else if !self.complete {
            lines.push("rollback incomplete: fix the errors above and run `wasmtune rollback` again".to_string());
        }
        lines
    }
}

/// The one line for entries whose map went with their process.
fn ended_peers_line(ended: &[PeerEntry]) -> String {
    let mut pids: Vec<String> = ended.iter().filter_map(|p| p.pid).map(|pid| pid.to_string()).collect();
    pids.sort();
    pids.dedup();
    let entries: Vec<String> =
        ended.iter().map(|p| format!("{} in netns {} (policy {})", p.peer, p.netns, p.policy)).collect();
    format!(
        "{} per-destination setting(s) ended with the wasmtune process that made them{}: {}; nothing left to undo \
         (the sockops map went with it), and connections opened while they were in effect keep what they were given",
        ended.len(),
        if pids.is_empty() { String::new() } else { format!(" (pid {})", pids.join(", ")) },
        entries.join(", ")
    )
}

/// How a rollback reaches the namespace a change was made in.
pub(crate) enum NamespaceAccess<'a> {
    /// In the daemon: by cookie through the registry, falling back to names.
    Registry(&'a NetnsRegistry),
    /// Offline: by name, checked against the journaled cookie.
    ByName,
}

/// Why a namespace could not be entered.
enum EnterFailure {
    Gone(String),
    Failed(String),
}

impl NamespaceAccess<'_> {
    fn enter(&self, name: &str, cookie: u64) -> Result<NetnsGuard, EnterFailure> {
        if let NamespaceAccess::Registry(registry) = self
            && let Ok(guard) = registry.enter(cookie)
        {
            return Ok(guard);
        }
        let guard = match NetnsRegistry::enter_by_name(name) {
            Ok(guard) => guard,
            Err(NetnsError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(EnterFailure::Gone(format!("netns {name} no longer exists")));
            }
            Err(NetnsError::InvalidName { .. }) => {
                return Err(EnterFailure::Gone(format!("netns {name} (cookie {cookie}) no longer exists")));
            }
            Err(error) => return Err(EnterFailure::Failed(error.to_string())),
        };
        match netns::current_cookie() {
            Ok(now) if now == cookie => Ok(guard),
            Ok(now) => Err(EnterFailure::Gone(format!(
                "the name {name} now belongs to another namespace (cookie {now}; the change was made in cookie {cookie})"
            ))),
            Err(errno) => Err(EnterFailure::Failed(format!("cannot read the cookie of netns {name}: {errno}"))),
        }
    }
}

/// What a rollback would restore, decided from the journal's fold alone:
/// the pure part of [`roll_back_matching`], which then checks each entry
/// against the kernel before writing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollbackPlan {
    /// Tunables to put back, most recently changed first; each is written
    /// only if the kernel still holds a value of the host's.
    pub restores: Vec<PlannedRestore>,
    /// Tunables left alone whatever the kernel holds.
    pub skipped: Vec<(TunableKey, SkipReason)>,
}

/// One tunable a rollback would write back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRestore {
    pub key: TunableKey,
    pub history: TunableHistory,
}

impl PlannedRestore {
    /// The value it would be written back to: its original, as the journal
    /// recorded it (the `old` of its first intent, or a snapshot's copy).
    pub fn to(&self) -> &Value {
        &self.history.original
    }
}

/// The rollback plan for the tunables whose last change was made by
/// `policy` (every changed tunable when `None`). Only network sysctls are
/// ever planned, however the journal was damaged or forged: the host never
/// writes anything else, so anything else in it is not the host's to undo.
pub fn plan(state: &DerivedState, policy: Option<&str>) -> RollbackPlan {
    let mut plan = RollbackPlan::default();
    for (key, history) in state.changed() {
        if policy.is_some_and(|p| history.last_policy != p) {
            continue;
        }
        if history.last_policy == super::record::ADMINISTRATOR {
            plan.skipped.push((key.clone(), SkipReason::Administrators));
        } else if let Err(error) = sysctl::validate_name(&key.tunable) {
            plan.skipped.push((key.clone(), SkipReason::NotTheHosts { detail: error.to_string() }));
        } else {
            plan.restores.push(PlannedRestore { key: key.clone(), history: history.clone() });
        }
    }
    plan
}

/// Restores every tunable the journal says the host changed; see the module
/// documentation. Under `dry_run` nothing is written or journaled.
pub(crate) fn roll_back(ledger: &mut Ledger, access: &NamespaceAccess<'_>, dry_run: bool) -> RollbackReport {
    roll_back_matching(ledger, access, dry_run, None)
}

/// Restores the tunables whose last change was made by `policy` (every
/// changed tunable when `None`). Only a rollback of everything ends with a
/// `rollback-complete` record: the others leave other policies' changes.
pub(crate) fn roll_back_matching(
    ledger: &mut Ledger,
    access: &NamespaceAccess<'_>,
    dry_run: bool,
    policy: Option<&str>,
) -> RollbackReport {
    let mut report = RollbackReport {
        complete: true,
        voided_by_reboot: ledger.state().voided_by_reboot(),
        peers_ended: ledger
            .state()
            .peers_ended()
            .iter()
            .filter(|peer| policy.is_none_or(|p| peer.policy == p))
            .cloned()
            .collect(),
        ..Default::default()
    };
    let RollbackPlan { restores, skipped } = plan(ledger.state(), policy);
    let had_history = !ledger.state().tunables().is_empty() || !ledger.state().peers_ended().is_empty();
    for (key, reason) in skipped {
        tracing::info!(tunable = %key.tunable, netns = %key.netns, "left {} in netns {} as it is: {reason}", key.tunable, key.netns);
        report.skipped.push((key, reason));
    }
    for PlannedRestore { key, history } in restores {
        let outcome = {
            match access.enter(&key.netns, history.netns_cookie) {
                Ok(_inside) => restore_one(ledger, &key, &history, dry_run),
                Err(EnterFailure::Gone(detail)) => Err(SkipReason::NamespaceGone { detail }),
                Err(EnterFailure::Failed(error)) => Err(SkipReason::Failed { error }),
            }
        };
        match outcome {
            Ok(restored) => report.restored.push(restored),
            Err(reason) => {
                if matches!(reason, SkipReason::Failed { .. }) {
                    report.complete = false;
                    tracing::warn!(tunable = %key.tunable, netns = %key.netns, "left {} in netns {} as it is: {reason}", key.tunable, key.netns);
                } else {
                    tracing::info!(tunable = %key.tunable, netns = %key.netns, "left {} in netns {} as it is: {reason}", key.tunable, key.netns);
                }
                report.skipped.push((key, reason));
            }
        }
    }
    if dry_run {
        report.complete = false;
    } else if report.complete
        && policy.is_none()
        && had_history
        && let Err(error) = ledger.record(Record::RollbackComplete { time: now_ms() })
    {
        tracing::error!(%error, "cannot journal the end of the rollback");
        report.complete = false;
    }
    report
}

/// Restores one tunable, inside its namespace.
fn restore_one(
    ledger: &mut Ledger,
    key: &TunableKey,
    history: &TunableHistory,
    dry_run: bool,
) -> Result<RestoredTunable, SkipReason> {
    let failed = |error: String| SkipReason::Failed { error };
    let found = sysctl::read(&key.tunable).map_err(|e| match e {
        // Booted into a kernel without it: nothing of the host's is left there.
        sysctl::SysctlError::DoesNotExist { .. } => SkipReason::NotOnThisKernel,
        other => failed(other.to_string()),
    })?;
    if found == history.original {
        return Err(SkipReason::AlreadyOriginal);
    }
    if !history.holds_host_value(&found) {
        let expected = history.last_written.clone().or_else(|| history.unconfirmed.clone()).unwrap_or(found.clone());
        return Err(SkipReason::ChangedSince { expected, found });
    }
    if dry_run {
        return Err(SkipReason::DryRun { from: found, to: history.original.clone() });
    }
    let write = write_sysctl(
        ledger,
        SysctlIntent::Rollback(RollbackIntent {
            seq: 0,
            time: now_ms(),
            netns: history.netns_cookie,
            netns_name: key.netns.clone(),
            tunable: key.tunable.clone(),
            from: found.clone(),
            to: history.original.clone(),
        }),
    );
    if let Some(journal_error) = write.unjournaled_outcome {
        tracing::error!(error = %journal_error, tunable = %key.tunable, netns = %key.netns, "cannot journal the outcome of a restoring write");
        if write.result.is_ok() {
            return Err(failed(format!("restored, but the journal failed: {journal_error}")));
        }
    }
    write.result.map_err(|error| failed(error.to_string()))?;
    tracing::info!(
        event = "rollback",
        tunable = %key.tunable,
        netns = %key.netns,
        from = %found,
        to = %history.original,
        "restored {} in netns {} from ({found}) to its original ({})",
        key.tunable,
        key.netns,
        history.original
    );
    Ok(RestoredTunable {
        netns: key.netns.clone(),
        tunable: key.tunable.clone(),
        from: found,
        to: history.original.clone(),
    })
}

/// What became of changes a previous process journaled and never confirmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettledIntents {
    /// The kernel holds the new value: recorded as applied.
    pub applied: usize,
    /// The kernel does not: recorded as failed, with what it holds.
    pub not_applied: usize,
    /// The namespace is gone or unreadable: left open (rollback skips it).
    pub unknown: usize,
}

/// Settles every intent without an outcome (the process died between
/// journaling a change and confirming it) by reading what the kernel holds
/// now, so that the journal says exactly which value is the host's and no
/// change is made or counted twice.
pub(crate) fn settle_unresolved(ledger: &mut Ledger, access: &NamespaceAccess<'_>) -> SettledIntents {
    let mut settled = SettledIntents::default();
    for intent in ledger.state().unresolved() {
        let found = match access.enter(&intent.netns_name, intent.netns) {
            Ok(_inside) => sysctl::read(&intent.tunable).ok(),
            Err(_) => None,
        };
        let outcome = match found {
            Some(found) if found == intent.new => {
                settled.applied += 1;
                Record::Applied { seq: intent.seq, time: now_ms() }
            }
            Some(found) => {
                settled.not_applied += 1;
                // Not `found`: a value neither the old nor the new one was
                // written by someone else, and must not pass for the host's.
                Record::Failed {
                    seq: intent.seq,
                    time: now_ms(),
                    error: format!("the process stopped around the write; the kernel holds ({found})"),
                    found: None,
                }
            }
            None => {
                settled.unknown += 1;
                continue;
            }
        };
        let took_effect = matches!(outcome, Record::Applied { .. });
        match ledger.record(outcome) {
            Err(error) => {
                tracing::error!(%error, tunable = %intent.tunable, "cannot journal the outcome of an interrupted change");
            }
            Ok(()) => tracing::info!(
                tunable = %intent.tunable,
                netns = %intent.netns_name,
                seq = intent.seq,
                took_effect,
                "a change of {} in netns {} was interrupted by a crash; settled from what the kernel holds",
                intent.tunable,
                intent.netns_name
            ),
        }
    }
    settled
}

/// Rolls back from the journal in `state_dir` with no daemon running (after
/// a crash, or an exit without `--rollback`), entering namespaces by name on
/// the calling thread. Fails if a daemon holds the journal.
pub fn rollback_offline(state_dir: &Path) -> Result<RollbackReport, LedgerError> {
    if !super::Journal::path_in(state_dir).exists() {
        return Ok(RollbackReport { complete: true, ..Default::default() });
    }
    let mut ledger = Ledger::open(state_dir)?;
    Ok(roll_back(&mut ledger, &NamespaceAccess::ByName, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(netns: &str) -> TunableKey {
        TunableKey { netns: netns.into(), tunable: "net.ipv4.tcp_rmem".into() }
    }

    #[test]
    fn reports_each_tunable_and_whether_it_finished() {
        let report = RollbackReport {
            restored: vec![RestoredTunable {
                netns: "rx".into(),
                tunable: "net.ipv4.tcp_rmem".into(),
                from: Value::Integers(vec![4096, 131072, 122880]),
                to: Value::Integers(vec![4096, 131072, 98304]),
            }],
            skipped: vec![
                (
                    key("init"),
                    SkipReason::ChangedSince {
                        expected: Value::Integers(vec![1, 2, 4]),
                        found: Value::Integers(vec![1, 2, 5]),
                    },
                ),
                (key("gone"), SkipReason::NamespaceGone { detail: "netns gone no longer exists".into() }),
            ],
            complete: true,
            voided_by_reboot: 0,
            ..Default::default()
        };
        assert_eq!(
            report.lines(),
            [
                "restored net.ipv4.tcp_rmem in netns rx: (4096 131072 122880) -> (4096 131072 98304)",
                "left net.ipv4.tcp_rmem in netns init as it is: changed by someone else since (wasmtune wrote (1 2 4), it now holds (1 2 5))",
                "left net.ipv4.tcp_rmem in netns gone as it is: the namespace is gone: netns gone no longer exists",
            ]
        );
        let incomplete = RollbackReport {
            skipped: vec![(key("rx"), SkipReason::Failed { error: "EPERM".into() })],
            ..Default::default()
        };
        assert_eq!(
            incomplete.lines().last().map(String::as_str),
            Some("rollback incomplete: fix the errors above and run `wasmtune rollback` again")
        );
        assert_eq!(RollbackReport { complete: true, ..Default::default() }.lines(), ["nothing to roll back"]);
    }

    #[test]
    fn offline_rollback_without_a_journal_has_nothing_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = rollback_offline(&dir.path().join("absent")).expect("rollback");
        assert!(report.complete);
        assert!(report.restored.is_empty() && report.skipped.is_empty());
        assert!(!dir.path().join("absent").exists());
    }

    #[test]
    fn after_the_process_died_its_peer_entries_are_reported_in_one_line_and_the_rollback_completes() {
        use crate::ledger::state::tests::{applied, peer_intent};
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut ledger = Ledger::open(dir.path()).expect("open");
            ledger.record(peer_intent(1, "10.0.0.2/32", Some("reno"))).expect("intent");
            ledger.record(applied(1)).expect("applied");
            assert_eq!(ledger.state().peers().count(), 1);
        }
        let report = rollback_offline(dir.path()).expect("rollback");
        assert!(report.complete, "{report:?}");
        assert!(report.restored.is_empty() && report.skipped.is_empty() && report.peers_removed.is_empty());
        let lines = report.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("1 per-destination setting(s) ended with the wasmtune process that made them (pid ")
        );
        assert!(lines[0].contains("10.0.0.2/32 in netns rx (policy tcp-cong)"), "{lines:?}");
        assert!(lines[0].contains("nothing left to undo"), "{lines:?}");
        assert!(lines[0].contains("keep what they were given"), "{lines:?}");
        let again = rollback_offline(dir.path()).expect("second rollback");
        assert_eq!(again.lines(), ["nothing to roll back"], "the first rollback completed");
    }

    #[test]
    fn a_tunable_this_kernel_no_longer_has_is_skipped_and_the_rollback_completes() {
        use crate::ledger::state::tests::{applied, intent};
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = "net.core.wasmtune_no_such_sysctl";
        let here = crate::netns::current_cookie().expect("this namespace's cookie");
        {
            let mut ledger = Ledger::open(dir.path()).expect("open");
            let (old, new) = (Value::Integers(vec![1]), Value::Integers(vec![2]));
            let Record::Intent(mut made) = intent(1, "init", gone, old, new, "need more") else { unreachable!() };
            made.netns = here;
            ledger.record(Record::Intent(made)).expect("intent");
            ledger.record(applied(1)).expect("applied");
        }
        let report = rollback_offline(dir.path()).expect("rollback");
        assert!(report.complete, "{report:?}");
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        assert_eq!(report.skipped[0].1, SkipReason::NotOnThisKernel, "{report:?}");
    }

    #[test]
    fn a_journal_naming_a_sysctl_the_host_never_writes_is_not_restored_and_does_not_stall_the_rollback() {
        use crate::ledger::state::tests::{applied, intent, ints};
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut ledger = Ledger::open(dir.path()).expect("open");
            let text = |t: &str| Value::Text(t.to_string());
            ledger.record(intent(1, "init", "kernel.core_pattern", text("|/bin/sh"), text("core"), "x")).expect("rec");
            ledger.record(applied(1)).expect("applied");
            ledger.record(intent(2, "init", "net.ipv4/../../kernel/x", ints(&[1]), ints(&[2]), "x")).expect("rec");
            ledger.record(applied(2)).expect("applied");
        }
        let journal = crate::ledger::Journal::path_in(dir.path());
        let state = crate::ledger::Journal::replay(&journal).map(|r| DerivedState::from_records(&r.records));
        let planned = plan(&state.expect("replay"), None);
        assert!(planned.restores.is_empty(), "{planned:?}");
        assert_eq!(planned.skipped.len(), 2, "{planned:?}");
        assert!(planned.skipped.iter().all(|(_, reason)| matches!(reason, SkipReason::NotTheHosts { .. })));

        // Before, each was a failed restore, and no rollback ever completed.
        let report = rollback_offline(dir.path()).expect("rollback");
        assert!(report.complete, "{report:?}");
        assert!(report.restored.is_empty(), "{report:?}");
        let lines = report.lines();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("left kernel.core_pattern in netns init as it is: the journal names no")),
            "{lines:?}"
        );
        assert_eq!(rollback_offline(dir.path()).expect("again").lines(), ["nothing to roll back"]);
    }

    /// Journals of every kind of damage: records of random contents
    /// (foreign and malformed sysctl names, the administrator's values,
    /// snapshots), garbage lines, cut-off lines, bytes changed, the file
    /// cut short — generated from a seed, so a failure names its case.
    mod corrupt_journals {
        use crate::ledger::ADMINISTRATOR;
        use crate::ledger::record::{Intent, PeerIntent, Record, RollbackIntent, Snapshot};
        use crate::ledger::state::{PeerEntry, TunableHistory, TunableKey};
        use crate::peer::PeerSettings;
        use crate::sysctl::Value;

        pub(crate) struct Rng(pub u64);

        impl Rng {
            pub(crate) fn next(&mut self) -> u64 {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }

            pub(crate) fn below(&mut self, n: usize) -> usize {
                (self.next() % n as u64) as usize
            }

            fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
                from[self.below(from.len())]
            }

            fn chance(&mut self, percent: usize) -> bool {
                self.below(100) < percent
            }
        }

        const TUNABLES: &[&str] = &[
            "net.ipv4.tcp_rmem",
            "net.core.rmem_max",
            "net.ipv4.tcp_congestion_control",
            "kernel.core_pattern",
            "vm.overcommit_memory",
            "fs.protected_symlinks",
            "net..rmem_max",
            "net.ipv4/../../../kernel/core_pattern",
            "NET.IPV4.TCP_RMEM",
            "net.ipv4.tcp_rmem.",
            "net.ipv4.tcp_rmem\n",
            "",
        ];
        const NETNS: &[&str] = &["init", "rx", "ns-1", "", "../../proc/1/ns/net"];
        const POLICIES: &[&str] = &["tcp-buffer", "udp-buffer", ADMINISTRATOR, ""];
        const TEXTS: &[&str] = &["bbr", "cubic", "", "4096 131072", "|/bin/sh -c x"];
        const BOOTS: &[&str] = &["b1", "b2"];

        fn value(rng: &mut Rng) -> Value {
            match rng.below(3) {
                0 => Value::Text(rng.pick(TEXTS).to_string()),
                1 => Value::Integers((0..1 + rng.below(3)).map(|_| (rng.next() % 10_000_000) as i64).collect()),
                _ => Value::Integers(vec![rng.next() as i64]),
            }
        }

        fn seq(rng: &mut Rng) -> u64 {
            rng.below(12) as u64
        }

        fn intent(rng: &mut Rng) -> Intent {
            Intent {
                seq: seq(rng),
                time: rng.next() % 1000,
                policy: rng.pick(POLICIES).into(),
                netns: rng.below(3) as u64,
                netns_name: rng.pick(NETNS).into(),
                tunable: rng.pick(TUNABLES).into(),
                old: value(rng),
                new: value(rng),
                scenario: "s".into(),
                reason: "r".into(),
            }
        }

        fn peer_intent(rng: &mut Rng) -> PeerIntent {
            PeerIntent {
                seq: seq(rng),
                time: 0,
                policy: rng.pick(POLICIES).into(),
                netns: 1,
                netns_name: rng.pick(NETNS).into(),
                peer: "10.0.0.0/8".into(),
                settings: rng.chance(70).then(|| PeerSettings { congestion: Some("bbr".into()), ..Default::default() }),
                scenario: "s".into(),
                reason: "r".into(),
            }
        }

        fn rollback_intent(rng: &mut Rng) -> RollbackIntent {
            RollbackIntent {
                seq: seq(rng),
                time: 0,
                netns: 1,
                netns_name: rng.pick(NETNS).into(),
                tunable: rng.pick(TUNABLES).into(),
                from: value(rng),
                to: value(rng),
            }
        }

        fn history(rng: &mut Rng) -> TunableHistory {
            TunableHistory {
                netns_cookie: 1,
                original: value(rng),
                last_written: rng.chance(60).then(|| value(rng)),
                unconfirmed: rng.chance(30).then(|| value(rng)),
                changes: rng.below(5) as u32,
                last_policy: rng.pick(POLICIES).into(),
                last_scenario: String::new(),
                last_reason: String::new(),
                last_time: 0,
                last_seq: seq(rng),
                before_run: None,
            }
        }

        fn snapshot(rng: &mut Rng) -> Snapshot {
            let key = |rng: &mut Rng| TunableKey { netns: rng.pick(NETNS).into(), tunable: rng.pick(TUNABLES).into() };
            Snapshot {
                time: 0,
                boot_id: rng.chance(50).then(|| rng.pick(BOOTS).into()),
                booted_at: None,
                session_pid: Some(7),
                max_seq: seq(rng),
                voided_by_reboot: rng.below(3),
                tunables: (0..rng.below(4)).map(|_| (key(rng), history(rng))).collect(),
                scenarios: Default::default(),
                pending: (0..rng.below(3))
                    .map(|_| match rng.below(3) {
                        0 => Record::Intent(intent(rng)),
                        1 => Record::PeerIntent(peer_intent(rng)),
                        _ => Record::RollbackIntent(rollback_intent(rng)),
                    })
                    .collect(),
                peers: Vec::<PeerEntry>::new(),
                peers_ended: Vec::new(),
            }
        }

        fn record(rng: &mut Rng) -> Record {
            match rng.below(20) {
                0..=5 => Record::Intent(intent(rng)),
                6..=9 => Record::Applied { seq: seq(rng), time: 1 },
                10 => Record::Failed {
                    seq: seq(rng),
                    time: 1,
                    error: "e".into(),
                    found: rng.chance(50).then(|| value(rng)),
                },
                11 => Record::PeerIntent(peer_intent(rng)),
                12 | 13 => Record::RollbackIntent(rollback_intent(rng)),
                14 => Record::RolledBack { seq: seq(rng), time: 1 },
                15 => Record::RollbackComplete { time: 1 },
                16 | 17 => Record::SessionStart {
                    pid: 7,
                    time: 0,
                    boot_id: rng.chance(70).then(|| rng.pick(BOOTS).into()),
                    booted_at: None,
                },
                _ => Record::Snapshot(Box::new(snapshot(rng))),
            }
        }

        /// One journal's bytes.
        pub(crate) fn journal(rng: &mut Rng) -> Vec<u8> {
            let mut lines: Vec<Vec<u8>> = Vec::new();
            // Most journals have no unreadable line (one before the end is
            // refused whole), some a few, some many.
            let unreadable = [0, 0, 2, 20][rng.below(4)];
            for _ in 0..rng.below(40) {
                let whole = serde_json::to_vec(&record(rng)).expect("encode");
                let line = if rng.chance(unreadable) {
                    match rng.below(3) {
                        0 => (0..rng.below(60)).map(|_| rng.next() as u8).filter(|b| *b != b'\n').collect(),
                        1 => whole[..rng.below(whole.len())].to_vec(),
                        _ => br#"{"kind":"intent","seq":1}"#.to_vec(),
                    }
                } else {
                    match rng.below(10) {
                        0 => b" \t".to_vec(),
                        1 => lines.last().cloned().unwrap_or(whole),
                        _ => whole,
                    }
                };
                lines.push(line);
            }
            let mut bytes = lines.join(&b'\n');
            if rng.chance(80) {
                bytes.push(b'\n');
            }
            if rng.chance(20) && !bytes.is_empty() {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(bytes.len());
                    bytes[at] = if rng.chance(50) { b'0' + rng.below(10) as u8 } else { rng.next() as u8 };
                }
            }
            if rng.chance(15) {
                bytes.truncate(rng.below(bytes.len() + 1));
            }
            bytes
        }
    }

    /// Every value a journal line recorded as an original: the `old` of an
    /// intent (in a snapshot's pending records too), a snapshot's originals.
    fn recorded_originals(records: &[Record]) -> Vec<Value> {
        let mut originals = Vec::new();
        for record in records {
            match record {
                Record::Intent(intent) => originals.push(intent.old.clone()),
                Record::Snapshot(snapshot) => {
                    originals.extend(snapshot.tunables.iter().map(|(_, history)| history.original.clone()));
                    originals.extend(recorded_originals(&snapshot.pending));
                }
                _ => {}
            }
        }
        originals
    }

    #[test]
    fn a_rollback_plan_from_any_journal_restores_only_network_sysctls_to_recorded_originals() {
        use corrupt_journals::{Rng, journal};
        let (mut read, mut refused, mut planned, mut not_the_hosts) = (0, 0, 0, 0);
        for case in 0..4_000u64 {
            let mut rng = Rng(case);
            let bytes = journal(&mut rng);
            // A journal that does not read is refused whole: no rollback at all.
            let Ok(replay) = crate::ledger::parse_journal(&bytes) else {
                refused += 1;
                continue;
            };
            read += 1;
            let originals = recorded_originals(&replay.records);
            let state = DerivedState::from_records(&replay.records);
            for policy in [None, Some("tcp-buffer"), Some(crate::ledger::ADMINISTRATOR)] {
                let planned_here = plan(&state, policy);
                for restore in &planned_here.restores {
                    let name = &restore.key.tunable;
                    assert!(
                        name.starts_with("net.") && sysctl::validate_name(name).is_ok(),
                        "case {case}: would write {name:?}"
                    );
                    assert!(
                        originals.contains(restore.to()),
                        "case {case}: would write ({}) to {name}, which no journal line recorded as an original",
                        restore.to()
                    );
                    assert_ne!(restore.history.last_policy, crate::ledger::ADMINISTRATOR, "case {case}");
                    assert!(policy.is_none_or(|p| restore.history.last_policy == p), "case {case}");
                }
                planned += planned_here.restores.len();
                not_the_hosts +=
                    planned_here.skipped.iter().filter(|(_, r)| matches!(r, SkipReason::NotTheHosts { .. })).count();
            }
            // Compacting changes nothing a rollback would do.
            let snapshot = Record::Snapshot(Box::new(state.snapshot(0)));
            let line = serde_json::to_vec(&snapshot).expect("encode");
            let again = crate::ledger::parse_journal(&line).expect("a snapshot line reads back");
            assert_eq!(DerivedState::from_records(&again.records), state, "case {case}");
        }
        println!(
            "journals read {read}, refused {refused}; restores planned {planned}, foreign names skipped {not_the_hosts}"
        );
        assert!(read > 1_000 && refused > 100 && planned > 1_000 && not_the_hosts > 100, "the cases cover too little");
    }
}
