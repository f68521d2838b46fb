//! The route decision: given a route-table event and the `max_size` in
//! force, raise it by one learning-rate step when the table is nearly full.
//! A namespace without a readable `max_size` is left alone; others are not
//! affected.

use wasmtune_sdk::{Change, RouteTable, rate};

/// The tunable (per network namespace).
pub const MAX_SIZE: &str = "net.ipv6.route.max_size";
/// The kernel stores `max_size` in an int.
pub const CAP: u64 = i32::MAX as u64;
pub const SCENARIO_RAISE: &str = "IPv6 route table nearly full";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The table is not nearly full, the event predates the value in force,
    /// or `max_size` cannot be read in its namespace.
    Skip,
    /// Already at the cap: say so once.
    CapReached,
    Raise(Change),
}

/// What to do about `table` when `max_size` is `current` (`None`:
/// unreadable there).
pub fn decide(table: &RouteTable, current: Option<i64>, rate: u8) -> Decision {
    let Some(current) = current else { return Decision::Skip };
    let current = current.max(0).unsigned_abs();
    if u64::from(table.max_size) != current {
        return Decision::Skip;
    }
    if !rate::nearly_full(u64::from(table.entries), current, rate) {
        return Decision::Skip;
    }
    let Some(new) = rate::raise(current, rate, CAP) else { return Decision::CapReached };
    let reason = format!(
        "the IPv6 route table holds {} entries of a maximum of {current}; raising max_size by {} to {new} so that routes are not refused (kernels before 6.3 refuse cached routes past it)",
        table.entries,
        rate::step_percent(rate)
    );
    Decision::Raise(Change::new(MAX_SIZE, vec![new as i64], SCENARIO_RAISE, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: u32, max_size: u32) -> RouteTable {
        RouteTable { netns: 1, entries, max_size }
    }

    #[test]
    fn raises_a_nearly_full_table_by_a_step() {
        let Decision::Raise(change) = decide(&table(3500, 4096), Some(4096), 4) else { panic!() };
        assert_eq!(change.fields, vec![5120]);
        assert_eq!(change.scenario, SCENARIO_RAISE);
        assert!(change.reason.contains("3500 entries of a maximum of 4096"), "{}", change.reason);
    }

    #[test]
    fn a_table_with_room_or_a_stale_event_is_left_alone() {
        assert_eq!(decide(&table(1000, 4096), Some(4096), 4), Decision::Skip);
        assert_eq!(decide(&table(4000, 4096), Some(5120), 4), Decision::Skip);
        // Rate 0: only within 1.6 %.
        assert_eq!(decide(&table(3500, 4096), Some(4096), 0), Decision::Skip);
    }

    #[test]
    fn the_cap_is_the_int_maximum() {
        let near = (CAP - 10) as u32;
        let Decision::Raise(change) = decide(&table(near, near), Some(i64::from(near)), 4) else { panic!() };
        assert_eq!(change.fields, vec![CAP as i64]);
        assert_eq!(decide(&table(CAP as u32, CAP as u32), Some(CAP as i64), 4), Decision::CapReached);
    }

    #[test]
    fn a_namespace_without_max_size_does_not_stop_another() {
        let elsewhere = RouteTable { netns: 2, ..table(3500, 4096) };
        assert_eq!(decide(&table(3500, 4096), None, 4), Decision::Skip);
        let Decision::Raise(change) = decide(&elsewhere, Some(4096), 4) else { panic!() };
        assert_eq!(change.fields, vec![5120]);
    }
}
