//! The administrator's tunables. A tunable that another process wrote in a
//! tuned namespace, or that a boot-time sysctl.d file sets, belongs to the
//! administrator there: no policy changes it until they hand it back
//! (`wasmtune override clear`). bpftune's rule, kept across restarts: the
//! set lives in `<state-dir>/overrides.json`, keyed by namespace *name*
//! (cookies do not survive a reboot; `init` and `/run/netns` names do).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::state_file::{self, StateFileError};
use crate::sysctl_d::{BootSetting, BootSettings};

/// The file, inside the state directory.
pub const OVERRIDES_FILE: &str = "overrides.json";
/// The format version written; a newer one is refused rather than misread.
const FORMAT_VERSION: u32 = 1;

/// One tunable the administrator owns in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Override {
    /// The namespace's name (`init`, a `/run/netns` name, `pid:N`).
    pub netns: String,
    pub tunable: String,
    /// What the administrator set, when known.
    pub value: Option<String>,
    /// Who wrote it (0 and an empty command when not known).
    pub pid: u32,
    pub comm: String,
    /// When it was seen (milliseconds since the Unix epoch).
    pub time_ms: u64,
    /// How it was found: `write` (seen written), `changed` (found different
    /// from what the host wrote) or `sysctl.d FILE:LINE` (boot-time setting).
    pub source: String,
}

impl Override {
    /// "sysctl (pid 42) at 1700000000000 ms", or the boot-time file.
    pub fn who(&self) -> String {
        match (self.pid, self.comm.as_str()) {
            (0, "") => self.source.clone(),
            (pid, comm) => format!("{comm} (pid {pid})"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct OverridesFile {
    version: u32,
    overrides: Vec<Override>,
    /// Boot-time settings the administrator handed back, with the value the
    /// file set then: a file that sets another value later owns it again.
    #[serde(default)]
    released_boot: Vec<ReleasedBoot>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct ReleasedBoot {
    tunable: String,
    value: String,
}

/// The namespace boot-time sysctl files apply to.
const INIT: &str = "init";

/// Why the stored overrides could not be read or kept.
pub type OverridesError = StateFileError;

/// The set, shared by every thread that checks or records an override.
#[derive(Debug, Default)]
pub struct AdminOverrides {
    /// Where it is kept; `None` under `--dry-run` (nothing is written).
    path: Option<PathBuf>,
    entries: RwLock<BTreeMap<(String, String), Override>>,
    /// Boot-time settings (`respect-sysctl-d`), read at start, never stored:
    /// the files say what they say at each start.
    boot: RwLock<Option<BootSettings>>,
    released_boot: RwLock<Vec<ReleasedBoot>>,
}

impl AdminOverrides {
    /// The set kept in `state_dir` (empty when the file does not exist yet).
    pub fn load(state_dir: &Path) -> Result<AdminOverrides, OverridesError> {
        let path = state_dir.join(OVERRIDES_FILE);
        let (entries, released) = read_file(&path)?;
        Ok(AdminOverrides {
            path: Some(path),
            entries: RwLock::new(entries),
            boot: RwLock::default(),
            released_boot: RwLock::new(released),
        })
    }

    /// The stored set, read but never written back (`--dry-run`).
    pub fn load_read_only(state_dir: &Path) -> Result<AdminOverrides, OverridesError> {
        let (entries, released) = read_file(&state_dir.join(OVERRIDES_FILE))?;
        Ok(AdminOverrides {
            path: None,
            entries: RwLock::new(entries),
            boot: RwLock::default(),
            released_boot: RwLock::new(released),
        })
    }

    /// Makes the network tunables these boot-time files set the
    /// administrator's in the initial namespace (those not handed back).
    pub fn set_boot(&self, settings: BootSettings) {
        *self.boot.write().unwrap_or_else(PoisonError::into_inner) = Some(settings);
    }

    pub fn contains(&self, netns: &str, tunable: &str) -> bool {
        self.get(netns, tunable).is_some()
    }

    pub fn get(&self, netns: &str, tunable: &str) -> Option<Override> {
        let found = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            entries.get(&(netns.to_string(), tunable.to_string())).cloned()
        };
        found.or_else(|| if netns == INIT { self.boot_override(tunable) } else { None })
    }

    /// The boot-time setting of `tunable` as an override, unless handed back.
    fn boot_override(&self, tunable: &str) -> Option<Override> {
        if !tunable.starts_with("net.") {
            return None;
        }
        let boot = self.boot.read().unwrap_or_else(PoisonError::into_inner);
        let setting = boot.as_ref()?.get(tunable)?;
        let released = self.released_boot.read().unwrap_or_else(PoisonError::into_inner);
        if released.iter().any(|r| r.tunable == tunable && r.value == setting.value) {
            return None;
        }
        Some(boot_entry(tunable, setting))
    }

    /// Every boot-time network setting in force as an override, handed-back
    /// ones left out (patterns cannot be listed; they still apply).
    pub fn boot_overrides(&self) -> Vec<Override> {
        let names: Vec<String> = {
            let boot = self.boot.read().unwrap_or_else(PoisonError::into_inner);
            boot.as_ref().map(|b| b.iter().map(|s| s.name.clone()).collect()).unwrap_or_default()
        };
        names.iter().filter_map(|name| self.boot_override(name)).collect()
    }

    /// Records an override (the first one stays: it says when the tunable
    /// became the administrator's); true if it is new. Kept on disk before
    /// this returns.
    pub fn insert(&self, entry: Override) -> Result<bool, OverridesError> {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let key = (entry.netns.clone(), entry.tunable.clone());
        if entries.contains_key(&key) {
            return Ok(false);
        }
        entries.insert(key, entry);
        self.persist(&entries)?;
        Ok(true)
    }

    /// Hands `tunable` back in `netns` (in every namespace when `None`);
    /// returns what was cleared.
    pub fn clear(&self, netns: Option<&str>, tunable: &str) -> Result<Vec<Override>, OverridesError> {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<(String, String)> =
            entries.keys().filter(|(ns, t)| t == tunable && netns.is_none_or(|wanted| wanted == ns)).cloned().collect();
        let mut cleared: Vec<Override> = keys.iter().filter_map(|key| entries.remove(key)).collect();
        if netns.is_none_or(|wanted| wanted == INIT)
            && let Some(boot) = self.boot_override(tunable)
        {
            let value = boot.value.clone().unwrap_or_default();
            self.released_boot
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ReleasedBoot { tunable: tunable.to_string(), value });
            cleared.push(boot);
        }
        if !cleared.is_empty() {
            self.persist(&entries)?;
        }
        Ok(cleared)
    }

    /// Forgets a namespace that went away; returns how many were dropped.
    pub fn forget_netns(&self, netns: &str) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let before = entries.len();
        entries.retain(|(ns, _), _| ns != netns);
        let dropped = before - entries.len();
        if dropped > 0
            && let Err(error) = self.persist(&entries)
        {
            tracing::warn!(%error, "cannot keep the overrides after namespace {netns} went away");
        }
        dropped
    }

    /// Every override, by namespace then tunable.
    pub fn list(&self) -> Vec<Override> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    fn persist(&self, entries: &BTreeMap<(String, String), Override>) -> Result<(), OverridesError> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut released_boot = self.released_boot.read().unwrap_or_else(PoisonError::into_inner).clone();
        released_boot.sort();
        released_boot.dedup();
        let file =
            OverridesFile { version: FORMAT_VERSION, overrides: entries.values().cloned().collect(), released_boot };
        state_file::write(path, &file)
    }
}

/// A boot-time setting as an override of the initial namespace.
fn boot_entry(tunable: &str, setting: &BootSetting) -> Override {
    Override {
        netns: INIT.to_string(),
        tunable: tunable.to_string(),
        value: Some(setting.value.clone()),
        pid: 0,
        comm: String::new(),
        time_ms: 0,
        source: format!("sysctl.d {}:{}", setting.file.display(), setting.line),
    }
}

type Stored = (BTreeMap<(String, String), Override>, Vec<ReleasedBoot>);

fn read_file(path: &Path) -> Result<Stored, OverridesError> {
    let lists = "the tunables the administrator owns";
    let Some(file) = state_file::read(path, lists, |f: &OverridesFile| f.version, FORMAT_VERSION)? else {
        return Ok(Stored::default());
    };
    let entries = file.overrides.into_iter().map(|o| ((o.netns.clone(), o.tunable.clone()), o)).collect();
    Ok((entries, file.released_boot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wasmtune-overrides-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn entry(netns: &str, tunable: &str) -> Override {
        Override {
            netns: netns.into(),
            tunable: tunable.into(),
            value: Some("4096 65536 100000".into()),
            pid: 42,
            comm: "sysctl".into(),
            time_ms: 1,
            source: "write".into(),
        }
    }

    #[test]
    fn overrides_survive_a_reload_and_clear_per_namespace_or_everywhere() {
        let dir = scratch("reload");
        let set = AdminOverrides::load(&dir).expect("empty set");
        assert!(set.insert(entry("init", "net.ipv4.tcp_rmem")).expect("kept"));
        assert!(!set.insert(entry("init", "net.ipv4.tcp_rmem")).expect("kept"), "the first one stays");
        assert!(set.insert(entry("rx", "net.ipv4.tcp_rmem")).expect("kept"));
        assert!(set.insert(entry("rx", "net.ipv4.tcp_wmem")).expect("kept"));

        let again = AdminOverrides::load(&dir).expect("reloaded");
        assert_eq!(again.list().len(), 3);
        assert!(again.contains("rx", "net.ipv4.tcp_wmem"));
        assert_eq!(again.clear(Some("rx"), "net.ipv4.tcp_rmem").expect("cleared").len(), 1);
        assert!(again.contains("init", "net.ipv4.tcp_rmem"));
        assert_eq!(again.clear(None, "net.ipv4.tcp_rmem").expect("cleared").len(), 1);
        assert_eq!(again.forget_netns("rx"), 1);
        assert!(AdminOverrides::load(&dir).expect("reloaded").list().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_line() {
        let dir = scratch("damaged");
        std::fs::write(dir.join(OVERRIDES_FILE), "{\n  \"version\": 1,\n  \"overrides\": [ nope ]\n}\n")
            .expect("write");
        let error = AdminOverrides::load(&dir).expect_err("refused").to_string();
        assert!(error.contains("overrides.json line 3"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn read_only_sets_are_never_written() {
        let dir = scratch("dry");
        let set = AdminOverrides::load_read_only(&dir).expect("empty");
        assert!(set.insert(entry("init", "net.core.rmem_max")).expect("in memory"));
        assert!(!dir.join(OVERRIDES_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
