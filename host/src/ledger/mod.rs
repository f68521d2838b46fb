//! The ledger: every kernel change journaled before it is made, and what the
//! journal adds up to — the exit summary and the rollback.
//!
//! - [`record`]: the journal's record types;
//! - [`journal`]: the file (append, sync, lock, replay with a torn tail);
//! - [`state`]: the pure fold of records into originals and last values;
//! - [`summary`]: what an administrator reads on exit;
//! - [`rollback`]: putting originals back, in the daemon or after a crash.

pub mod journal;
pub mod record;
pub mod rollback;
pub mod state;
pub mod summary;

use std::path::{Path, PathBuf};

use nix::errno::Errno;

pub use journal::{JOURNAL_FILE, Journal, Replay, TornTail};
pub use record::{Intent, PeerIntent, Record, RollbackIntent};
pub use rollback::{RestoredTunable, RollbackReport, SettledIntents, SkipReason, rollback_offline};
pub use state::{DerivedState, PeerEntry, TunableHistory, TunableKey};
pub use summary::{ScenarioCount, Summary, TunableSummary};

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
    /// A record could not be appended or synced to disk.
    #[error("cannot append to journal {path}: {source}")]
    Append { path: PathBuf, source: std::io::Error },
}

/// The open journal and its fold, kept in step: a record is folded only once
/// it is on disk.
pub struct Ledger {
    journal: Journal,
    state: DerivedState,
}

impl Ledger {
    /// Opens the journal in `state_dir` (see [`Journal::open`]), replays it and
    /// records this process's session start.
    pub fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        let (journal, replay) = Journal::open(state_dir)?;
        let state = DerivedState::from_records(&replay.records);
        let mut ledger = Ledger { journal, state };
        ledger.record(Record::session_start())?;
        Ok(ledger)
    }

    /// Appends and syncs a record, then folds it.
    pub fn record(&mut self, record: Record) -> Result<(), LedgerError> {
        self.journal.append(&record)?;
        self.state.apply(&record);
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
