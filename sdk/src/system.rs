//! Facts about the machine that limits are derived from, and the limits
//! derived from them that several tuners share.

use crate::bindings::wasmtune::policy::system as imports;

/// Physical memory, bytes.
pub fn memory_bytes() -> u64 {
    imports::memory_bytes()
}

/// Page size, bytes (`tcp_mem` and `udp_mem` count pages).
pub fn page_size() -> u32 {
    imports::page_size()
}

/// Online CPUs.
pub fn cpu_count() -> u32 {
    imports::cpu_count()
}

/// A quarter of `memory_bytes` in pages of `page_size`: the most any
/// protocol's memory limit (`tcp_mem`, `udp_mem`) may reach.
pub fn quarter_of_memory_pages(memory_bytes: u64, page_size: u32) -> u64 {
    memory_bytes / 4 / u64::from(page_size.max(1))
}

/// [`quarter_of_memory_pages`] of this machine.
pub fn memory_cap_pages() -> u64 {
    quarter_of_memory_pages(memory_bytes(), page_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_memory_in_pages() {
        assert_eq!(quarter_of_memory_pages(8 << 30, 4096), (2 << 30) / 4096);
        assert_eq!(quarter_of_memory_pages(4096, 0), 1024, "a zero page size is read as 1");
    }
}
