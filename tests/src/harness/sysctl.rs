//! Reading and writing sysctls inside a test's namespaces and in the test
//! process's own (initial) namespace; `GlobalSysctlGuard` restores a global
//! value on drop; `SysctlSampler` watches values while traffic runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{HarnessError, Netns};

/// `/proc/sys/<name with dots as slashes>`.
fn proc_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// Kernel format with single spaces: `"4096\t131072\t6291456\n"` becomes
/// `"4096 131072 6291456"`, the form the daemon's log lines use.
pub fn normalize(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The integer fields of a value such as tcp_rmem's `"4096 131072 6291456"`.
pub fn parse_fields(name: &str, value: &str) -> Result<Vec<u64>, HarnessError> {
    value
        .split_whitespace()
        .map(|field| {
            field.parse::<u64>().map_err(|_| HarnessError::SysctlFormat {
                name: name.to_string(),
                value: value.to_string(),
                problem: "expected whitespace-separated unsigned integers",
            })
        })
        .collect()
}

/// Reads `name` as seen by the calling thread's network namespace.
fn read_here(name: &str) -> Result<String, HarnessError> {
    let path = proc_path(name);
    fs::read_to_string(&path).map(|v| normalize(&v)).map_err(|source| HarnessError::Io { action: "read", path, source })
}

/// Whether this kernel has `name` in the test process's namespace. Optional
/// sysctls (`net.core.flow_limit_cpu_bitmap` needs `CONFIG_NET_FLOW_LIMIT`)
/// are probed, never assumed.
pub fn sysctl_exists(name: &str) -> bool {
    proc_path(name).exists()
}

/// Writes `name` in the calling thread's network namespace.
fn write_here(name: &str, value: &str) -> Result<(), HarnessError> {
    let path = proc_path(name);
    fs::write(&path, value).map_err(|source| HarnessError::Io { action: "write", path, source })
}

/// The value of `name` in `netns`, normalised (see [`normalize`]).
pub fn sysctl_in(netns: &Netns, name: &str) -> Result<String, HarnessError> {
    let owned = name.to_string();
    netns.run_in(&format!("reading {name}"), move || read_here(&owned))
}

/// The integer fields of `name` in `netns`.
pub fn sysctl_fields_in(netns: &Netns, name: &str) -> Result<Vec<u64>, HarnessError> {
    parse_fields(name, &sysctl_in(netns, name)?)
}

/// Sets `name` to `value` in `netns` (a namespace the test made and will
/// delete, so nothing needs restoring).
pub fn set_sysctl_in(netns: &Netns, name: &str, value: &str) -> Result<(), HarnessError> {
    let (owned_name, owned_value) = (name.to_string(), value.to_string());
    netns.run_in(&format!("writing {name}"), move || write_here(&owned_name, &owned_value))
}

/// The value of `name` in the test process's own namespace (`init` in the
/// daemon's logs), normalised.
pub fn sysctl_init(name: &str) -> Result<String, HarnessError> {
    read_here(name)
}

/// Records a sysctl of the test process's own namespace and writes the
/// recorded value back on drop, whatever the test did in between.
#[derive(Debug)]
pub struct GlobalSysctlGuard {
    name: String,
    original: String,
}

impl GlobalSysctlGuard {
    /// Records `name` without changing it (for a test that lets the code
    /// under test change it).
    pub fn record(name: &str) -> Result<GlobalSysctlGuard, HarnessError> {
        Ok(GlobalSysctlGuard { name: name.to_string(), original: read_here(name)? })
    }

    /// Records `name`, then sets it to `value`.
    pub fn set(name: &str, value: &str) -> Result<GlobalSysctlGuard, HarnessError> {
        let guard = GlobalSysctlGuard::record(name)?;
        write_here(name, value)?;
        Ok(guard)
    }

    /// The value recorded at creation, normalised.
    pub fn original(&self) -> &str {
        &self.original
    }
}

impl Drop for GlobalSysctlGuard {
    fn drop(&mut self) {
        if let Err(err) = write_here(&self.name, &self.original) {
            eprintln!("harness: restoring {} to {:?}: {err}", self.name, self.original);
        }
    }
}

/// Reads sysctls of a namespace every `interval` on a thread of its own and
/// keeps every distinct value seen, in order: evidence of what reached the
/// kernel between two reads of a test.
pub struct SysctlSampler {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<Result<SysctlHistory, HarnessError>>>,
}

/// Per sysctl, the distinct values seen, in order.
pub type SysctlHistory = BTreeMap<String, Vec<String>>;

impl SysctlSampler {
    /// Starts sampling `names` in `netns`.
    pub fn start(netns: &Netns, names: &[&str], interval: Duration) -> Result<SysctlSampler, HarnessError> {
        let stop = Arc::new(AtomicBool::new(false));
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (path, netns_name) = (netns.path(), netns.name().to_string());
        let stop_flag = Arc::clone(&stop);
        // The thread enters the namespace once and stays: one read costs a
        // few microseconds rather than a thread or a process.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let worker = thread::Builder::new()
            .name(format!("sample-{netns_name}"))
            .spawn(move || {
                let entered = fs::File::open(&path)
                    .and_then(|file| nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(Into::into))
                    .map_err(|source| HarnessError::EnterNetns { netns: netns_name.clone(), source });
                let _ = entered_tx.send(entered.is_ok());
                entered?;
                let mut seen = SysctlHistory::new();
                loop {
                    let last_round = stop_flag.load(Ordering::Relaxed);
                    for name in &names {
                        let value = read_here(name)?;
                        let history = seen.entry(name.clone()).or_default();
                        if history.last() != Some(&value) {
                            history.push(value);
                        }
                    }
                    if last_round {
                        return Ok(seen);
                    }
                    thread::sleep(interval);
                }
            })
            .map_err(|source| HarnessError::Spawn { command: "sysctl sampler thread".to_string(), source })?;
        let mut sampler = SysctlSampler { stop, worker: Some(worker) };
        if entered_rx.recv() != Ok(true) {
            // Surface the thread's own error.
            sampler.stop.store(true, Ordering::Relaxed);
            return Err(sampler
                .join()
                .err()
                .unwrap_or(HarnessError::ThreadPanicked { what: "sysctl sampler".to_string() }));
        }
        Ok(sampler)
    }

    /// Stops sampling (after one last read) and returns, per sysctl, the
    /// distinct values seen in order.
    pub fn stop(mut self) -> Result<SysctlHistory, HarnessError> {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    fn join(&mut self) -> Result<SysctlHistory, HarnessError> {
        match self.worker.take() {
            Some(worker) => {
                worker.join().map_err(|_| HarnessError::ThreadPanicked { what: "sysctl sampler".to_string() })?
            }
            None => Ok(SysctlHistory::new()),
        }
    }
}

impl Drop for SysctlSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::{normalize, parse_fields};

    #[test]
    fn kernel_tabs_become_single_spaces() {
        assert_eq!(normalize("4096\t131072\t6291456\n"), "4096 131072 6291456");
    }

    #[test]
    fn fields_parse_and_garbage_is_an_error() {
        assert_eq!(parse_fields("x", "1 2 3").ok(), Some(vec![1, 2, 3]));
        assert!(parse_fields("x", "cubic").is_err());
    }
}
