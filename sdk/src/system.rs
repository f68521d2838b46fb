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

/// Protocol memory limits (`tcp_mem`, `udp_mem`: low, pressure, high, in
/// pages) each raised by one learning-rate step, none above `cap_pages`, in
/// order. `None` when the high limit is already at the cap.
pub fn raise_memory_limits(limits: [u64; 3], rate: u8, cap_pages: u64) -> Option<[u64; 3]> {
    let high = crate::rate::raise(limits[2], rate, cap_pages)?;
    let pressure = crate::rate::raise(limits[1], rate, high).unwrap_or(limits[1]).min(high);
    let low = crate::rate::raise(limits[0], rate, pressure).unwrap_or(limits[0]).min(pressure);
    Some([low, pressure, high])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_rise_together_under_the_cap() {
        assert_eq!(raise_memory_limits([1000, 2000, 4000], 4, 1 << 20), Some([1250, 2500, 5000]));
        assert_eq!(raise_memory_limits([1000, 2000, 4000], 4, 4500), Some([1250, 2500, 4500]));
        assert_eq!(raise_memory_limits([1000, 4400, 4400], 4, 4500), Some([1250, 4500, 4500]));
        assert_eq!(raise_memory_limits([1000, 2000, 4500], 4, 4500), None);
    }

    #[test]
    fn a_quarter_of_memory_in_pages() {
        assert_eq!(quarter_of_memory_pages(8 << 30, 4096), (2 << 30) / 4096);
        assert_eq!(quarter_of_memory_pages(4096, 0), 1024, "a zero page size is read as 1");
    }
}
