//! The ledger: every kernel change journaled before it is made, and what the
//! journal adds up to — the exit summary and the rollback.
//!
//! - [`record`]: the journal's record types;
//! - [`history`]: what is remembered of one tunable or peer entry;
//! - [`journal`]: the file (append, sync, lock, replay with a torn tail,
//!   compaction);
//! - [`state`]: the pure fold of records into originals and last values;
//! - [`summary`]: what an administrator reads on exit;
//! - [`rollback`]: putting originals back, in the daemon or after a crash
//!   ([`rollback::plan`]: what it would write, from the fold alone);
//! - [`write`]: the one journaled sysctl write, which changes and rollbacks share.

pub mod history;
pub mod journal;
pub mod record;
pub mod rollback;
pub mod state;
pub mod summary;
pub mod write;

use std::path::{Path, PathBuf};

use nix::errno::Errno;

pub use journal::{JOURNAL_FILE, Journal, Replay, TornTail, parse_journal};
pub use record::{ADMINISTRATOR, Intent, PeerIntent, Record, RollbackIntent, Snapshot};
pub use rollback::{
    PlannedRestore, RestoredTunable, RollbackPlan, RollbackReport, SettledIntents, SkipReason, rollback_offline,
};
pub use state::{DerivedState, PeerEntry, TunableHistory, TunableKey};
pub use summary::{ScenarioCount, Summary, TunableSummary};
pub use write::{SysctlIntent, SysctlWrite, SysctlWriteError, write_sysctl};

/// Why the journal could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The state directory could not be created or inspected.
    #[error("cannot create state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    /// The state directory (or the journal in it) is not safe to trust: a
    /// symlink, owned by another user, or writable by others. The journal
    /// drives writes as root; someone else must not be able to plant it.
    #[error("refusing state directory {path}: {problem}")]
    Unsafe { path: PathBuf, problem: String },
    /// The journal file could not be opened or its mode fixed.
    #[error("cannot open journal {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    /// Another process (a running daemon, or `wasmtune rollback`) holds the journal.
    #[error("journal {path} is in use by another wasmtune process")]
    InUse { path: PathBuf },
    /// Locking the journal failed for another reason.
    #[error("cannot lock journal {path}: {errno}")]
    Lock { path: PathBuf, errno: Errno },
    /// The journal could not be read.
    #[error("cannot read journal {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A line before the end is not a record: not a crash artefact, so the
    /// journal is not trusted.
    #[error("journal {path} line {line} is not a valid record: {source}")]
    Corrupt { path: PathBuf, line: usize, source: serde_json::Error },
    /// A torn tail could not be cut off.
    #[error("cannot cut the torn tail off journal {path}: {source}")]
    Repair { path: PathBuf, source: std::io::Error },
    /// A record could not be encoded.
    #[error("cannot encode a journal record: {source}")]
    Encode { source: serde_json::Error },
    /// The journal could not be compacted; the old one is still whole.
    #[error("cannot compact journal {path}: {source}")]
    Compact { path: PathBuf, source: std::io::Error },
    /// A record could not be appended or synced to disk.
    #[error("cannot append to journal {path}: {source}")]
    Append { path: PathBuf, source: std::io::Error },
}

/// The open journal and its fold, kept in step: a record is folded only once
/// it is on disk.
pub struct Ledger {
    journal: Journal,
    state: DerivedState,
    /// The journal is compacted once it is this long.
    compact_at: u64,
}

/// A journal is compacted past this size (or twice its last snapshot, if
/// that is larger): at two synced lines per change, about 20 000 changes.
pub const COMPACT_AT_BYTES: u64 = 8 << 20;

impl Ledger {
    /// Opens the journal in `state_dir` (see [`Journal::open`]), replays it and
    /// records this process's session start.
    pub fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_compacting_at(state_dir, COMPACT_AT_BYTES)
    }

    /// [`Ledger::open`], compacting past `bytes` instead of the default.
    pub fn open_compacting_at(state_dir: &Path, bytes: u64) -> Result<Ledger, LedgerError> {
        let (journal, replay) = Journal::open(state_dir)?;
        let state = DerivedState::from_records(&replay.records);
        let mut ledger = Ledger { journal, state, compact_at: bytes };
        ledger.record(Record::session_start())?;
        Ok(ledger)
    }

    /// Appends and syncs a record, then folds it; compacts the journal once
    /// it has grown past its bound.
    pub fn record(&mut self, record: Record) -> Result<(), LedgerError> {
        self.journal.append(&record)?;
        self.state.apply(&record);
        if self.journal.len() > self.compact_at {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal as one snapshot record of its fold.
    pub fn compact(&mut self) -> Result<(), LedgerError> {
        let before = self.journal.len();
        let snapshot = Record::Snapshot(Box::new(self.state.snapshot(record::now_ms())));
        self.journal.replace_with(std::slice::from_ref(&snapshot))?;
        let after = self.journal.len();
        self.compact_at = self.compact_at.max(after.saturating_mul(2));
        tracing::info!(event = "journal-compacted", journal = %self.journal.path().display(), before, after,
            "journal {} compacted: {before} bytes of records replaced by a snapshot of {after} bytes",
            self.journal.path().display());
        Ok(())
    }

    /// The sequence number for the next intent.
    pub fn next_seq(&self) -> u64 {
        self.state.max_seq() + 1
    }

    pub fn state(&self) -> &DerivedState {
        &self.state
    }

    pub fn path(&self) -> &Path {
        self.journal.path()
    }
}

#[cfg(test)]
mod tests {
    use super::state::tests::{applied, intent, ints, peer_intent};
    use super::*;

    const RMEM: &str = "net.ipv4.tcp_rmem";

    /// Changes to many tunables, a few left without outcome, peer entries.
    fn busy_history(ledger: &mut Ledger, rounds: u64) {
        for round in 0..rounds {
            let seq = ledger.next_seq();
            let netns = format!("ns{}", round % 7);
            ledger
                .record(intent(
                    seq,
                    &netns,
                    RMEM,
                    ints(&[4096, 131_072, 6_291_456]),
                    ints(&[4096, 131_072, round as i64]),
                    "grow",
                ))
                .expect("intent");
            if round % 50 != 49 {
                ledger.record(applied(seq)).expect("applied");
            }
            if round % 10 == 0 {
                let seq = ledger.next_seq();
                ledger.record(peer_intent(seq, &format!("10.{}.0.0/16", round % 5), Some("bbr"))).expect("peer");
                ledger.record(applied(seq)).expect("peer applied");
            }
        }
    }

    #[test]
    fn a_compacted_journal_adds_up_to_the_same_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bound = 64 << 10;
        let mut ledger = Ledger::open_compacting_at(dir.path(), bound).expect("open");
        busy_history(&mut ledger, 2_000);
        let len = std::fs::metadata(ledger.path()).expect("stat").len();
        assert!(len <= bound + 4096, "journal is {len} bytes, bound {bound}");
        let live = ledger.state().clone();
        drop(ledger);

        // What a reader of the file (the next start, `wasmtune rollback`) folds.
        let replay = Journal::replay(&Journal::path_in(dir.path())).expect("replay");
        assert!(matches!(replay.records.first(), Some(Record::Snapshot(_))), "{:?}", replay.records.first());
        assert_eq!(DerivedState::from_records(&replay.records), live);
        assert_eq!(live.unresolved().len(), 40);
        assert_eq!(live.scenarios()["grow"], 2_000 - 40);
    }

    #[test]
    fn an_outcome_after_the_snapshot_finds_its_intent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::open(dir.path()).expect("open");
        ledger.record(intent(1, "a", RMEM, ints(&[1]), ints(&[2]), "grow")).expect("intent");
        ledger.compact().expect("compact");
        ledger.record(applied(1)).expect("applied");
        let history = ledger.state().get("a", RMEM).expect("history").clone();
        assert_eq!(history.last_written, Some(ints(&[2])));
        assert!(ledger.state().unresolved().is_empty());
        drop(ledger);
        let replay = Journal::replay(&Journal::path_in(dir.path())).expect("replay");
        assert_eq!(DerivedState::from_records(&replay.records).get("a", RMEM), Some(&history));
    }

    #[test]
    fn a_compaction_cut_short_leaves_the_journal_whole_and_still_locked_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::open(dir.path()).expect("open");
        busy_history(&mut ledger, 20);
        let live = ledger.state().clone();
        drop(ledger);
        // A crash between writing the new file and renaming it.
        std::fs::write(dir.path().join("journal.jsonl.compacting"), b"{\"kind\":\"snap").expect("leftover");
        let mut again = Ledger::open(dir.path()).expect("reopen");
        assert!(!dir.path().join("journal.jsonl.compacting").exists());
        assert_eq!(again.state().tunables(), live.tunables());
        again.compact().expect("compact");
        // The renamed-in file is the locked one: a second writer is refused.
        assert!(matches!(Journal::open(dir.path()).err(), Some(LedgerError::InUse { .. })));
    }

    #[test]
    fn scenario_counts_and_ended_entries_stay_bounded() {
        let mut state = DerivedState::default();
        for seq in 1..=1_000u64 {
            state.apply(&intent(seq, "a", RMEM, ints(&[1]), ints(&[seq as i64]), &format!("s{seq}")));
            state.apply(&applied(seq));
        }
        assert!(state.scenarios().len() <= 256);
        assert_eq!(state.scenarios().values().sum::<u32>(), 1_000);
    }
}
