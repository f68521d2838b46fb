//! What each attached hook costs, as the kernel counts it: run count and
//! accumulated run time per program (`bpf_prog_info.run_cnt`/`run_time_ns`).
//!
//! The kernel only counts while run-time accounting is on. Turning it on
//! costs a little on every program run system-wide, so it is off unless a
//! [`RunTimeAccounting`] is alive (the kernel keeps it on while any of its
//! descriptors is open and restores the previous state when the last closes;
//! no global sysctl is written).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::BpfError;

/// Run counters of one attached hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRunStats {
    /// The hook, as in [`super::HookStatus::name`].
    pub hook: &'static str,
    /// The kernel's id of the hook's program.
    pub program_id: u32,
    /// Times the program ran while accounting was on.
    pub run_count: u64,
    /// Nanoseconds the program ran in total while accounting was on.
    pub run_time_ns: u64,
}

impl HookRunStats {
    /// Average cost of one run, if it ran at all.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

/// Keeps the kernel's BPF run-time accounting on while alive
/// (`bpf_enable_stats(BPF_STATS_RUN_TIME)`).
#[derive(Debug)]
pub struct RunTimeAccounting {
    _enabled: OwnedFd,
}

impl RunTimeAccounting {
    /// Turns accounting on (needs CAP_SYS_ADMIN).
    pub fn enable() -> Result<Self, BpfError> {
        // SAFETY: a plain syscall wrapper; it returns a new descriptor or a
        // negative errno.
        let fd = unsafe { libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME) };
        if fd < 0 {
            return Err(BpfError::EnableRunTimeStats { source: std::io::Error::from_raw_os_error(-fd) });
        }
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        Ok(Self { _enabled: unsafe { OwnedFd::from_raw_fd(fd) } })
    }
}

/// Reads the run counters of the program behind `program`.
pub(super) fn read(hook: &'static str, program: BorrowedFd<'_>) -> Result<HookRunStats, BpfError> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = u32::try_from(size_of_val(&info)).unwrap_or(u32::MAX);
    // SAFETY: `info` is a zeroed `bpf_prog_info` of `len` bytes; all of its
    // pointer fields are null, so the kernel writes into `info` alone.
    let ret = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(program.as_raw_fd(), &mut info, &mut len) };
    if ret < 0 {
        return Err(BpfError::ProgramInfo { hook, source: std::io::Error::from_raw_os_error(-ret) });
    }
    Ok(HookRunStats { hook, program_id: info.id, run_count: info.run_cnt, run_time_ns: info.run_time_ns })
}
