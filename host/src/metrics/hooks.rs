//! The BPF programs' run counters, read only at scrape time and only once
//! the kernel has counted them: while `kernel.bpf_stats_enabled` is 1, or
//! after a process held a `BPF_ENABLE_STATS` descriptor (`bpftool prog
//! profile` does; the sysctl does not show it, so counts above zero do).
//! Turning the accounting on costs every BPF program on the machine a
//! little on every run, so the daemon never does it for metrics.

use std::sync::{Arc, PoisonError, RwLock, Weak};

use crate::bpf::{HookRunStats, KernelSource};

/// Says whether the kernel counts BPF run time (1 when on, also when a
/// process turned it on through a descriptor rather than the sysctl).
const STATS_ENABLED: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The running kernel source, held weakly: stopping it must not wait for
/// a scrape, and a scrape after it stopped finds nothing.
static KERNEL: RwLock<Option<Weak<KernelSource>>> = RwLock::new(None);

/// Reads the run counters of `kernel`'s programs from now on.
pub fn watch(kernel: &Arc<KernelSource>) {
    *KERNEL.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::downgrade(kernel));
}

/// Whether the kernel counts BPF run time now.
pub fn stats_enabled() -> bool {
    std::fs::read_to_string(STATS_ENABLED).is_ok_and(|text| text.trim() == "1")
}

/// Each attached hook's run counters, once the kernel counts them and the
/// daemon's programs run; `None` otherwise (the families are then absent,
/// not zero: zero would read as "never ran").
pub fn run_stats() -> Option<Vec<HookRunStats>> {
    let kernel = KERNEL.read().unwrap_or_else(PoisonError::into_inner).as_ref()?.upgrade()?;
    let stats = match kernel.run_stats() {
        Ok(stats) => stats,
        Err(error) => {
            tracing::debug!(%error, "the BPF programs' run counters could not be read");
            return None;
        }
    };
    let counted = stats_enabled() || stats.iter().any(|s| s.run_count > 0);
    counted.then_some(stats)
}
