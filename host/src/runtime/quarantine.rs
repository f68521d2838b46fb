//! Quarantined policy files, kept across restarts in
//! `<state-dir>/quarantine.json` by file digest. A policy parked after
//! repeated faults would otherwise be loaded again by the next start — and
//! the restart that follows an out-of-memory kill is exactly when it must
//! not be. The same rule as in memory clears it: a different file of the
//! policy (any change of digest); so does `wasmtune policy enable NAME`.
//!
//! It also keeps, in memory only, which runtime processes already failed a
//! policy's call ([`QuarantineList::claim_runtime_failure`]), so that one
//! death is charged to one policy, not to every policy it cut off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::state_file::{self, StateFileError};

/// The file, inside the state directory.
pub const QUARANTINE_FILE: &str = "quarantine.json";
/// Failed runtime processes remembered; the oldest are forgotten first
/// (processes are numbered in order, and a channel only ever leads to a
/// recent one).
const CLAIMS_KEPT: usize = 64;
/// The format version written; a newer one is refused rather than misread.
const FORMAT_VERSION: u32 = 1;

/// One quarantined policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct QuarantineEntry {
    /// SHA-256 of the file: what is refused.
    pub digest: String,
    /// The policy's name (from its manifest).
    pub name: String,
    /// Where it was loaded from (`builtin` or the file's path).
    pub source: String,
    /// The last fault, or why it could not be rebuilt.
    pub reason: String,
    /// When it was quarantined (milliseconds since the Unix epoch).
    pub time_ms: u64,
}

impl QuarantineEntry {
    pub fn new(digest: &str, name: &str, source: &str, reason: &str) -> QuarantineEntry {
        QuarantineEntry {
            digest: digest.to_string(),
            name: name.to_string(),
            source: source.to_string(),
            reason: reason.to_string(),
            time_ms: crate::ledger::record::now_ms(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct QuarantineFile {
    version: u32,
    quarantined: Vec<QuarantineEntry>,
}

/// Why the stored quarantine list could not be read or kept.
pub type QuarantineError = StateFileError;

/// The quarantined files by digest, shared by the policy workers (which
/// add to it) and the reconciler (which checks and clears it).
#[derive(Debug, Default)]
pub struct QuarantineList {
    /// Where it is kept; `None` under `--dry-run` and in tests (nothing is
    /// written).
    path: Option<PathBuf>,
    entries: Mutex<BTreeMap<String, QuarantineEntry>>,
    /// Numbers of the runtime processes whose failure was already reported.
    failed_runtimes: Mutex<BTreeSet<u64>>,
}

impl QuarantineList {
    /// The list kept in `state_dir` (empty when the file does not exist yet).
    pub fn load(state_dir: &Path) -> Result<QuarantineList, QuarantineError> {
        let path = state_dir.join(QUARANTINE_FILE);
        let entries = read_file(&path)?;
        Ok(QuarantineList { path: Some(path), entries: Mutex::new(entries), failed_runtimes: Mutex::default() })
    }

    /// The stored list, honoured but never written back (`--dry-run`).
    pub fn load_read_only(state_dir: &Path) -> Result<QuarantineList, QuarantineError> {
        let entries = read_file(&state_dir.join(QUARANTINE_FILE))?;
        Ok(QuarantineList { path: None, entries: Mutex::new(entries), failed_runtimes: Mutex::default() })
    }

    /// The entry quarantining the file with this digest, if any.
    pub fn get(&self, digest: &str) -> Option<QuarantineEntry> {
        self.lock().get(digest).cloned()
    }

    /// Every entry, by digest.
    pub fn list(&self) -> Vec<QuarantineEntry> {
        self.lock().values().cloned().collect()
    }

    /// Records a quarantined file; on disk before this returns.
    pub fn insert(&self, entry: QuarantineEntry) -> Result<(), QuarantineError> {
        let mut entries = self.lock();
        entries.insert(entry.digest.clone(), entry);
        self.persist(&entries)
    }

    /// Forgets the other files of policy `name` once the file with `digest`
    /// runs: a different file of a policy ends its quarantine. Returns what
    /// was forgotten.
    pub fn forget_superseded(&self, name: &str, digest: &str) -> Result<Vec<QuarantineEntry>, QuarantineError> {
        self.remove_where(|entry| entry.name == name && entry.digest != digest)
    }

    /// Forgets every file of policy `name` (`wasmtune policy enable NAME`).
    pub fn clear_name(&self, name: &str) -> Result<Vec<QuarantineEntry>, QuarantineError> {
        self.remove_where(|entry| entry.name == name)
    }

    fn remove_where(&self, doomed: impl Fn(&QuarantineEntry) -> bool) -> Result<Vec<QuarantineEntry>, QuarantineError> {
        let mut entries = self.lock();
        let digests: Vec<String> = entries.values().filter(|e| doomed(e)).map(|e| e.digest.clone()).collect();
        let removed: Vec<QuarantineEntry> = digests.iter().filter_map(|d| entries.remove(d)).collect();
        if !removed.is_empty() {
            self.persist(&entries)?;
        }
        Ok(removed)
    }

    /// Records that runtime process number `process` failed a policy's
    /// call (or was killed for a reason of the host's). True only for the
    /// first report: the policy whose call broke first is the one that may
    /// have caused it; every other channel to that process breaks because
    /// it died, or because the first policy's worker killed it.
    pub fn claim_runtime_failure(&self, process: u64) -> bool {
        let mut failed = self.failed_runtimes.lock().unwrap_or_else(PoisonError::into_inner);
        let first = failed.insert(process);
        while failed.len() > CLAIMS_KEPT {
            failed.pop_first();
        }
        first
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, QuarantineEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called with the lock held, so writers never interleave.
    fn persist(&self, entries: &BTreeMap<String, QuarantineEntry>) -> Result<(), QuarantineError> {
        let Some(path) = &self.path else { return Ok(()) };
        let file = QuarantineFile { version: FORMAT_VERSION, quarantined: entries.values().cloned().collect() };
        state_file::write(path, &file)
    }
}

fn read_file(path: &Path) -> Result<BTreeMap<String, QuarantineEntry>, QuarantineError> {
    let lists = "the policy files quarantined after repeated faults";
    let file = state_file::read(path, lists, |f: &QuarantineFile| f.version, FORMAT_VERSION)?;
    Ok(file.into_iter().flat_map(|f| f.quarantined).map(|entry| (entry.digest.clone(), entry)).collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn entry(digest: &str, name: &str) -> QuarantineEntry {
        QuarantineEntry::new(digest, name, "/etc/wasmtune/policies/x.wasm", "memory: policy memory limit reached")
    }

    #[test]
    fn quarantine_survives_a_reload_and_ends_when_the_file_changes() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let list = QuarantineList::load(dir.path()).expect("empty list");
        list.insert(entry("aaaa", "hoarder")).expect("kept");
        list.insert(entry("cccc", "other")).expect("kept");
        let path = dir.path().join(QUARANTINE_FILE);
        let mode = std::fs::metadata(&path).expect("written").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("json.tmp").exists(), "the temporary file was left behind");

        let again = QuarantineList::load(dir.path()).expect("reloaded");
        let kept = again.get("aaaa").expect("still quarantined after a restart");
        assert_eq!((kept.name.as_str(), kept.reason.as_str()), ("hoarder", "memory: policy memory limit reached"));
        assert!(kept.time_ms > 0);

        // The same file again: nothing to forget. A new file: its old one is forgotten.
        assert!(again.forget_superseded("hoarder", "aaaa").expect("kept").is_empty());
        let forgotten = again.forget_superseded("hoarder", "bbbb").expect("kept");
        assert_eq!(forgotten.iter().map(|e| e.digest.as_str()).collect::<Vec<_>>(), ["aaaa"]);
        let after = QuarantineList::load(dir.path()).expect("reloaded");
        assert!(after.get("aaaa").is_none(), "a replaced file stays quarantined");
        assert!(after.get("cccc").is_some(), "another policy's entry was dropped");

        assert_eq!(after.clear_name("other").expect("cleared").len(), 1);
        assert!(QuarantineList::load(dir.path()).expect("reloaded").list().is_empty());
    }

    #[test]
    fn a_symlinked_list_is_refused() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::write(&elsewhere, "{\"version\": 1, \"quarantined\": []}").expect("write");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(QUARANTINE_FILE)).expect("symlink");
        let error = QuarantineList::load(dir.path()).expect_err("refused").to_string();
        assert!(error.contains("cannot read"), "{error}");
    }

    #[test]
    fn a_damaged_list_is_refused_with_its_line() {
        let dir = tempfile::tempdir().expect("scratch dir");
        std::fs::write(dir.path().join(QUARANTINE_FILE), "{\n  \"version\": 1,\n  \"quarantined\": [ nope ]\n}\n")
            .expect("write");
        let error = QuarantineList::load(dir.path()).expect_err("refused").to_string();
        assert!(error.contains("quarantine.json line 3"), "{error}");
    }

    #[test]
    fn a_runtime_failure_is_claimed_once_and_old_ones_are_forgotten() {
        let list = QuarantineList::default();
        assert!(list.claim_runtime_failure(3), "the first report was not the claim");
        assert!(!list.claim_runtime_failure(3), "a second channel to the same process was charged too");
        assert!(list.claim_runtime_failure(4), "the next process was taken as the same");
        for process in 5..5 + CLAIMS_KEPT as u64 {
            list.claim_runtime_failure(process);
        }
        assert_eq!(list.failed_runtimes.lock().expect("claims").len(), CLAIMS_KEPT);
        assert!(!list.claim_runtime_failure(4 + CLAIMS_KEPT as u64), "a recent claim was forgotten");
    }

    #[test]
    fn read_only_lists_are_never_written() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let list = QuarantineList::load_read_only(dir.path()).expect("empty");
        list.insert(entry("aaaa", "hoarder")).expect("in memory");
        assert!(list.get("aaaa").is_some());
        assert!(!dir.path().join(QUARANTINE_FILE).exists());
    }
}
