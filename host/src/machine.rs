//! The machine facts limits are derived from (RAM, page size, CPUs), as
//! `sysconf` tells them. One reading for the host's hard limits and for the
//! `system` capability, so that the host and its policies agree on what
//! "a quarter of RAM" is.

/// A `sysconf` value; `None` when the kernel does not say (or says nothing
/// positive).
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// Physical memory, in pages.
pub fn phys_pages() -> Option<u64> {
    sysconf(libc::_SC_PHYS_PAGES)
}

/// The page size, in bytes.
pub fn page_size() -> Option<u64> {
    sysconf(libc::_SC_PAGESIZE)
}

/// Processors online.
pub fn online_cpus() -> Option<u64> {
    sysconf(libc::_SC_NPROCESSORS_ONLN)
}
