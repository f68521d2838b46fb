//! The machine facts limits are derived from (RAM, page size, CPUs), as
//! `sysconf` tells them. One reading for the host's hard limits and for the
//! `system` capability, so that the host and its policies agree on what
//! "a quarter of RAM" is.

use std::sync::OnceLock;

/// A `sysconf` value; `None` when the kernel does not say (or says nothing
/// positive).
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// Physical memory, in pages.
pub fn phys_pages() -> Option<u64> {
    static PAGES: OnceLock<Option<u64>> = OnceLock::new();
    *PAGES.get_or_init(|| sysconf(libc::_SC_PHYS_PAGES))
}

/// The page size, in bytes.
pub fn page_size() -> Option<u64> {
    static SIZE: OnceLock<Option<u64>> = OnceLock::new();
    *SIZE.get_or_init(|| sysconf(libc::_SC_PAGESIZE))
}

/// Processors online.
pub fn online_cpus() -> Option<u64> {
    static CPUS: OnceLock<Option<u64>> = OnceLock::new();
    *CPUS.get_or_init(|| sysconf(libc::_SC_NPROCESSORS_ONLN))
}

/// Reads every fact now, once: the runtime process does this before its
/// system-call filter refuses the files glibc reads them from (a count of
/// CPUs taken after would be this process's affinity, not the machine's).
pub fn remember() {
    phys_pages();
    page_size();
    online_cpus();
}
