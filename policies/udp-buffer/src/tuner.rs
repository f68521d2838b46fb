//! The udp-buffer decisions, free of any host: which receive buffer sysctl
//! a queue-full drop calls for, and how far `udp_mem` may grow.
//!
//! A tunable comes in as an `Option` (`None`: this kernel does not have it,
//! or the host would not let the policy read it); only the decision that
//! needs it is skipped.

use wasmtune_sdk::{Change, UdpDrop, rate, system};

pub const RMEM_DEFAULT: &str = "net.core.rmem_default";
pub const RMEM_MAX: &str = "net.core.rmem_max";
pub const UDP_MEM: &str = "net.ipv4.udp_mem";
/// Highest receive buffer default or maximum the policy sets.
pub const BUFFER_CAP: u64 = 256 << 20;

pub const SCENARIO_BUFFER: &str = "need to increase UDP receive buffer size";
pub const SCENARIO_MEMORY: &str = "need to increase UDP memory limits";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do, and why (for tests and debug logs).
    Skip(&'static str),
    /// The tunable is at its cap: say so once.
    CapReached(&'static str),
    Change(Change),
}

/// A receive-queue-full drop on a socket whose buffer is `drop.buffer_bytes`,
/// with `rmem_default` and `rmem_max` in force (`None` when unreadable): a
/// socket that sized its own buffer needs only `rmem_max`, one with the
/// default only `rmem_default`.
pub fn on_queue_full(drop: &UdpDrop, rmem_default: Option<i64>, rmem_max: Option<i64>, rate: u8) -> Decision {
    let buffer = u64::from(drop.buffer_bytes);
    if drop.locked {
        let Some(rmem_max) = rmem_max else { return Decision::Skip("rmem_max is not readable here") };
        // SO_RCVBUF asked for a size, doubled and clamped to 2 × rmem_max:
        // only a socket held at that clamp would get more from a raise.
        let max = rmem_max.max(0).unsigned_abs();
        if !rate::nearly_full(buffer / 2, max, rate) {
            return Decision::Skip("the application chose a buffer below rmem_max");
        }
        let Some(new) = rate::raise(max, rate, BUFFER_CAP) else { return Decision::CapReached(RMEM_MAX) };
        let reason = format!(
            "a UDP socket on port {} that sized its own buffer ({buffer} bytes) is held at rmem_max and dropped {} datagrams; raising rmem_max by {} to {new}",
            drop.local_port,
            drop.drops,
            rate::step_percent(rate)
        );
        return Decision::Change(Change::new(RMEM_MAX, vec![new as i64], SCENARIO_BUFFER, reason));
    }
    let Some(rmem_default) = rmem_default else { return Decision::Skip("rmem_default is not readable here") };
    let default = rmem_default.max(0).unsigned_abs();
    if buffer < default {
        return Decision::Skip("the socket predates the current rmem_default");
    }
    let Some(new) = rate::raise(default, rate, BUFFER_CAP) else { return Decision::CapReached(RMEM_DEFAULT) };
    let reason = format!(
        "a UDP socket on port {} with the default buffer ({buffer} bytes) dropped {} datagrams because its receive queue was full; raising rmem_default by {} to {new}",
        drop.local_port,
        drop.drops,
        rate::step_percent(rate)
    );
    Decision::Change(Change::new(RMEM_DEFAULT, vec![new as i64], SCENARIO_BUFFER, reason))
}

/// UDP memory accounting refused datagrams (or reached pressure) with
/// `udp_mem` = `limits`; `cap_pages` is a quarter of RAM.
pub fn on_memory_limit(limits: &[i64], why: &str, rate: u8, cap_pages: u64) -> Decision {
    let [low, pressure, high] = limits else { return Decision::Skip("udp_mem does not have three fields") };
    let current = [*low, *pressure, *high].map(|v| v.max(0).unsigned_abs());
    let Some(new) = system::raise_memory_limits(current, rate, cap_pages) else {
        return Decision::CapReached(UDP_MEM);
    };
    let reason = format!(
        "{why}; raising udp_mem by {} from {} {} {} to {} {} {} pages (at most a quarter of RAM, {cap_pages} pages)",
        rate::step_percent(rate),
        current[0],
        current[1],
        current[2],
        new[0],
        new[1],
        new[2]
    );
    Decision::Change(Change::new(UDP_MEM, new.iter().map(|v| *v as i64).collect(), SCENARIO_MEMORY, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtune_sdk::UdpDropCause;

    fn drop(buffer: u32, locked: bool) -> UdpDrop {
        UdpDrop {
            netns: 1,
            cause: UdpDropCause::ReceiveQueueFull,
            local_port: 9000,
            buffer_bytes: buffer,
            locked,
            drops: 40,
        }
    }

    #[test]
    fn default_sized_sockets_raise_rmem_default() {
        let Decision::Change(change) = on_queue_full(&drop(212_992, false), Some(212_992), Some(212_992), 4) else {
            panic!()
        };
        assert_eq!(change.name, RMEM_DEFAULT);
        assert_eq!(change.fields, vec![266_240]);
        assert!(change.reason.contains("port 9000"), "{}", change.reason);
    }

    #[test]
    fn sockets_older_than_the_default_are_stale() {
        assert!(matches!(on_queue_full(&drop(212_992, false), Some(266_240), Some(212_992), 4), Decision::Skip(_)));
    }

    #[test]
    fn locked_sockets_raise_rmem_max_only_when_held_at_it() {
        // SO_RCVBUF of 4 MiB clamped to rmem_max 212992: sk_rcvbuf 425984.
        let Decision::Change(change) = on_queue_full(&drop(425_984, true), Some(212_992), Some(212_992), 4) else {
            panic!()
        };
        assert_eq!(change.name, RMEM_MAX);
        assert_eq!(change.fields, vec![266_240]);
        // A socket that asked for 64 KiB is not held by rmem_max.
        assert!(matches!(on_queue_full(&drop(131_072, true), Some(212_992), Some(212_992), 4), Decision::Skip(_)));
    }

    #[test]
    fn buffers_stop_at_256_mib() {
        let cap = BUFFER_CAP as i64;
        assert_eq!(
            on_queue_full(&drop(cap as u32, false), Some(cap), Some(cap), 4),
            Decision::CapReached(RMEM_DEFAULT)
        );
        assert_eq!(
            on_queue_full(&drop((2 * cap) as u32, true), Some(cap), Some(cap), 4),
            Decision::CapReached(RMEM_MAX)
        );
    }

    #[test]
    fn udp_mem_grows_within_a_quarter_of_ram() {
        let Decision::Change(change) = on_memory_limit(&[100, 200, 300], "drops", 4, 350) else { panic!() };
        assert_eq!(change.fields, vec![125, 250, 350]);
        assert_eq!(change.scenario, SCENARIO_MEMORY);
        assert_eq!(on_memory_limit(&[100, 200, 350], "drops", 4, 350), Decision::CapReached(UDP_MEM));
        assert!(matches!(on_memory_limit(&[1, 2], "drops", 4, 350), Decision::Skip(_)));
    }

    #[test]
    fn locked_sockets_raise_rmem_max_without_rmem_default() {
        let Decision::Change(change) = on_queue_full(&drop(425_984, true), None, Some(212_992), 4) else { panic!() };
        assert_eq!((change.name.as_str(), change.fields[0]), (RMEM_MAX, 266_240));
    }

    #[test]
    fn default_sized_sockets_raise_rmem_default_without_rmem_max() {
        let decision = on_queue_full(&drop(212_992, false), Some(212_992), None, 4);
        let Decision::Change(change) = decision else { panic!("{decision:?}") };
        assert_eq!((change.name.as_str(), change.fields[0]), (RMEM_DEFAULT, 266_240));
        // The one it needs, missing: nothing, and no other tunable instead.
        assert!(matches!(on_queue_full(&drop(212_992, false), None, Some(212_992), 4), Decision::Skip(_)));
    }
}
