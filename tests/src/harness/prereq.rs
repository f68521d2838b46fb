//! What an end-to-end test needs from the machine, and what happens when it
//! is missing: skip with a printed reason, or fail when
//! `WASMTUNE_E2E_REQUIRED=1` (CI, where everything must be present).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::daemon::wasmtune_bin;

/// The environment variable that turns a missing prerequisite into a failure.
pub const REQUIRED_ENV: &str = "WASMTUNE_E2E_REQUIRED";

/// One thing a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Running as root (namespaces, sysctls, BPF).
    Root,
    /// A program on `PATH` (or in /sbin, /usr/sbin).
    Tool(&'static str),
    /// The wasmtune daemon binary, built for this profile.
    Daemon,
}

impl Requirement {
    /// Namespaces, veth links and iperf3 traffic.
    pub const NETWORK_E2E: [Requirement; 4] =
        [Requirement::Root, Requirement::Tool("ip"), Requirement::Tool("iperf3"), Requirement::Tool("ethtool")];
    /// All of the above plus the daemon.
    pub const DAEMON_E2E: [Requirement; 5] = [
        Requirement::Root,
        Requirement::Tool("ip"),
        Requirement::Tool("iperf3"),
        Requirement::Tool("ethtool"),
        Requirement::Daemon,
    ];

    /// `None` when met, else why not.
    fn unmet(&self) -> Option<String> {
        match self {
            Requirement::Root => (!nix::unistd::geteuid().is_root()).then(|| "not running as root".to_string()),
            Requirement::Tool(tool) => (!tool_exists(tool)).then(|| format!("`{tool}` is not installed")),
            Requirement::Daemon => match wasmtune_bin() {
                Ok(_) => None,
                Err(err) => Some(format!("the wasmtune daemon is not available: {err}")),
            },
        }
    }
}

/// Checks `requirements`; when one is unmet prints `SKIP: <why>` and returns
/// `true` (the test should return), unless `WASMTUNE_E2E_REQUIRED=1`, in
/// which case it panics so the test fails.
pub fn skip_without(requirements: &[Requirement]) -> bool {
    let unmet: Vec<String> = requirements.iter().filter_map(Requirement::unmet).collect();
    if unmet.is_empty() {
        return false;
    }
    let why = unmet.join("; ");
    if std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "1") {
        panic!("prerequisite missing and {REQUIRED_ENV}=1: {why}");
    }
    println!("SKIP: {why}");
    eprintln!("SKIP: {why}");
    true
}

/// Serialises tests that measure throughput when they run as threads of one
/// process (`cargo test`); under nextest the `serial` test group does it
/// across processes. Hold the guard for the whole test.
pub fn measurement_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that panicked while holding the lock left nothing half-done
    // that the next one depends on: its guards cleaned up on unwind.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tool_exists(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|dir| !dir.is_empty())
        .any(|dir| is_executable(&Path::new(dir).join(tool)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
