//! `wasmtune:policy/system`: the machine facts limits are derived from
//! (memory, page size, CPUs), read as the host reads them for its own
//! limits ([`crate::machine`]). Read-only and harmless.

use crate::machine;
use crate::wit::wasmtune::policy::system::Host;

pub struct SystemCap;

impl Host for SystemCap {
    fn memory_bytes(&mut self) -> wasmtime::Result<u64> {
        Ok(machine::phys_pages().unwrap_or(0).saturating_mul(machine::page_size().unwrap_or(0)))
    }

    fn page_size(&mut self) -> wasmtime::Result<u32> {
        Ok(u32::try_from(machine::page_size().unwrap_or(0)).unwrap_or(4096))
    }

    fn cpu_count(&mut self) -> wasmtime::Result<u32> {
        Ok(u32::try_from(machine::online_cpus().unwrap_or(0)).unwrap_or(1).max(1))
    }
}
