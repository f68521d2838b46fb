//! `wasmtune:policy/system`: the machine facts limits are derived from
//! (memory, page size, CPUs). Read-only and harmless.

use crate::wit::wasmtune::policy::system::Host;

pub struct SystemCap;

fn sysconf(name: libc::c_int) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).unwrap_or(0)
}

impl Host for SystemCap {
    fn memory_bytes(&mut self) -> wasmtime::Result<u64> {
        Ok(sysconf(libc::_SC_PHYS_PAGES).saturating_mul(sysconf(libc::_SC_PAGESIZE)))
    }

    fn page_size(&mut self) -> wasmtime::Result<u32> {
        Ok(u32::try_from(sysconf(libc::_SC_PAGESIZE)).unwrap_or(4096))
    }

    fn cpu_count(&mut self) -> wasmtime::Result<u32> {
        Ok(u32::try_from(sysconf(libc::_SC_NPROCESSORS_ONLN)).unwrap_or(1).max(1))
    }
}
