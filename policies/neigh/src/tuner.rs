//! The neigh decision, free of any host: grow the three gc thresholds of a
//! family's default table when entries near `gc_thresh3`, within the address
//! space the devices can actually use; shrink them back when the table
//! holds a quarter of `gc_thresh3` or less.
//!
//! Each threshold comes in as an `Option` (`None`: this kernel does not have
//! it, or the host would not let the policy read it) and only its own change
//! is skipped. The others keep their order: each stays at or below the next
//! one up that is known, and without `gc_thresh3` the table's own limit (as
//! the event reports it) says how full the table is.

use wasmtune_sdk::{AddressFamily, Change, NeighbourTable, rate};

/// The kernel's defaults, which shrinking never goes below.
pub const FLOORS: [u64; 3] = [128, 512, 1024];
/// The manifest's ceiling, whatever the address space says.
pub const HARD_CAP: u64 = 16 << 20;

pub const SCENARIO_RAISE: &str = "neighbour table nearly full";
pub const SCENARIO_SHRINK: &str = "neighbour table mostly empty";

/// Every tunable: `gc_thresh1..3` of the IPv4 default table, then IPv6's.
pub const ALL: [&str; 6] = [
    "net.ipv4.neigh.default.gc_thresh1",
    "net.ipv4.neigh.default.gc_thresh2",
    "net.ipv4.neigh.default.gc_thresh3",
    "net.ipv6.neigh.default.gc_thresh1",
    "net.ipv6.neigh.default.gc_thresh2",
    "net.ipv6.neigh.default.gc_thresh3",
];

/// `gc_thresh1..3` of `family`'s default table.
pub fn tunables(family: AddressFamily) -> [&'static str; 3] {
    let [v4_1, v4_2, v4_3, v6_1, v6_2, v6_3] = ALL;
    match family {
        AddressFamily::Ipv4 => [v4_1, v4_2, v4_3],
        AddressFamily::Ipv6 => [v6_1, v6_2, v6_3],
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Skip,
    /// `gc_thresh3` is at the address-space cap: say so once, change nothing.
    CapReached {
        cap: u64,
    },
    /// Changes in the order to request them.
    Change(Vec<Change>),
}

/// State of one namespace and family.
#[derive(Debug, Clone, Default)]
pub struct Lane {
    /// Each threshold when first read: shrinking never goes below it.
    baseline: [Option<u64>; 3],
}

impl Lane {
    /// What `table` calls for with `gc_thresh1..3` = `current` in force.
    pub fn decide(&mut self, table: &NeighbourTable, current: [Option<i64>; 3], rate: u8) -> Decision {
        let current = current.map(|value| value.map(|v| v.max(0).unsigned_abs()));
        for (first, now) in self.baseline.iter_mut().zip(current) {
            if first.is_none() {
                *first = now;
            }
        }
        let entries = u64::from(table.entries);
        let limit = current[2].unwrap_or(u64::from(table.limit));
        if rate::nearly_full(entries, limit, rate) {
            return grow(table, current, limit, rate);
        }
        if entries <= limit / 4 {
            return self.shrink(table, current, limit, rate);
        }
        Decision::Skip
    }

    /// Each readable threshold a step down, lowest first, never below its
    /// floor nor below the (new) one beneath it.
    fn shrink(&self, table: &NeighbourTable, current: [Option<u64>; 3], limit: u64, rate: u8) -> Decision {
        let [t1, t2, t3] = current;
        let floor = |i: usize| FLOORS[i].max(self.baseline[i].unwrap_or(0));
        let new1 = t1.map(|t1| rate::lower(t1, rate, floor(0)).unwrap_or(t1));
        let new2 = t2.map(|t2| rate::lower(t2, rate, floor(1).max(new1.unwrap_or(0))).unwrap_or(t2));
        let below3 = new2.or(new1).unwrap_or(0);
        let new3 = t3.map(|t3| rate::lower(t3, rate, floor(2).max(below3)).unwrap_or(t3));
        let why = format!(
            "the {} neighbour table holds only {} entries of gc_thresh3 {limit}; lowering the gc thresholds by {} toward their starting values",
            family_name(table.family),
            table.entries,
            rate::step_percent(rate)
        );
        let planned = [(0, t1, new1), (1, t2, new2), (2, t3, new3)];
        let changes = changes(&tunables(table.family), &planned, SCENARIO_SHRINK, &why);
        if changes.is_empty() { Decision::Skip } else { Decision::Change(changes) }
    }
}

/// Each readable threshold a step up, highest first: `gc_thresh3` within the
/// address space, the others at or below the (new) one above them, or the
/// table's limit without a readable `gc_thresh3`.
fn grow(table: &NeighbourTable, current: [Option<u64>; 3], limit: u64, rate: u8) -> Decision {
    let [t1, t2, t3] = current;
    let cap = table.address_space.clamp(FLOORS[2], HARD_CAP);
    let new3 = match t3 {
        Some(t3) => match rate::raise(t3, rate, cap) {
            Some(new3) => Some(new3),
            None => return Decision::CapReached { cap },
        },
        None => None,
    };
    let above2 = new3.unwrap_or(limit);
    let new2 = t2.map(|t2| rate::raise(t2, rate, above2).unwrap_or(t2).min(above2));
    let above1 = new2.unwrap_or(above2);
    let new1 = t1.map(|t1| rate::raise(t1, rate, above1).unwrap_or(t1).min(above1));
    let why = format!(
        "the {} neighbour table holds {} entries of gc_thresh3 {limit} (address space {}); raising the gc thresholds by {} so that entries are not evicted",
        family_name(table.family),
        table.entries,
        table.address_space,
        rate::step_percent(rate)
    );
    let planned = [(2, t3, new3), (1, t2, new2), (0, t1, new1)];
    let changes = changes(&tunables(table.family), &planned, SCENARIO_RAISE, &why);
    if changes.is_empty() { Decision::Skip } else { Decision::Change(changes) }
}

fn family_name(family: AddressFamily) -> &'static str {
    match family {
        AddressFamily::Ipv4 => "IPv4",
        AddressFamily::Ipv6 => "IPv6",
    }
}

/// One change per readable threshold that moves, in `planned` order
/// (index, value now, new value).
fn changes(names: &[&str; 3], planned: &[(usize, Option<u64>, Option<u64>)], scenario: &str, why: &str) -> Vec<Change> {
    planned
        .iter()
        .filter_map(|&(i, old, new)| Some((i, old?, new?)))
        .filter(|(_, old, new)| old != new)
        .map(|(i, old, new)| {
            let reason = format!("{why}: gc_thresh{} {old} -> {new}", i + 1);
            Change::new(names[i], vec![new as i64], scenario, reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: u32, limit: u32, address_space: u64) -> NeighbourTable {
        NeighbourTable { netns: 1, family: AddressFamily::Ipv4, ifindex: 2, entries, limit, address_space }
    }

    fn known(thresholds: [i64; 3]) -> [Option<i64>; 3] {
        thresholds.map(Some)
    }

    fn fields(decision: &Decision) -> Vec<(String, i64)> {
        let Decision::Change(changes) = decision else { panic!("{decision:?}") };
        changes.iter().map(|c| (c.name.rsplit('.').next().unwrap_or("").to_string(), c.fields[0])).collect()
    }

    #[test]
    fn a_nearly_full_table_raises_all_three_highest_first() {
        let mut lane = Lane::default();
        let decision = lane.decide(&table(900, 1024, 65536 * 4), known([128, 512, 1024]), 4);
        assert_eq!(
            fields(&decision),
            [("gc_thresh3".into(), 1280), ("gc_thresh2".into(), 640), ("gc_thresh1".into(), 160)]
        );
        let Decision::Change(changes) = decision else { panic!() };
        assert!(changes[0].reason.contains("900 entries of gc_thresh3 1024"), "{}", changes[0].reason);
    }

    #[test]
    fn growth_stops_at_the_address_space() {
        let mut lane = Lane::default();
        let decision = lane.decide(&table(1100, 1200, 1300), known([128, 512, 1200]), 4);
        assert_eq!(fields(&decision)[0], ("gc_thresh3".into(), 1300));
        assert_eq!(
            lane.decide(&table(1250, 1300, 1300), known([128, 640, 1300]), 4),
            Decision::CapReached { cap: 1300 }
        );
    }

    #[test]
    fn an_empty_table_shrinks_back_but_not_below_the_start() {
        let mut lane = Lane::default();
        // First seen at the defaults, then raised.
        let _ = lane.decide(&table(500, 1024, 1 << 20), known([128, 512, 1024]), 4);
        let decision = lane.decide(&table(100, 2000, 1 << 20), known([250, 1000, 2000]), 4);
        assert_eq!(
            fields(&decision),
            [("gc_thresh1".into(), 188), ("gc_thresh2".into(), 750), ("gc_thresh3".into(), 1500)]
        );
        assert_eq!(lane.decide(&table(10, 1024, 1 << 20), known([128, 512, 1024]), 4), Decision::Skip);
    }

    #[test]
    fn an_administrators_larger_start_is_kept() {
        let mut lane = Lane::default();
        assert_eq!(lane.decide(&table(10, 8192, 1 << 20), known([4096, 6144, 8192]), 4), Decision::Skip);
    }

    #[test]
    fn a_table_in_between_is_left_alone() {
        let mut lane = Lane::default();
        assert_eq!(lane.decide(&table(500, 1024, 1 << 20), known([128, 512, 1024]), 4), Decision::Skip);
    }

    #[test]
    fn gc_thresh1_and_2_still_rise_without_gc_thresh3() {
        let mut lane = Lane::default();
        // The table's own limit (1024) says it is nearly full and bounds them.
        let decision = lane.decide(&table(1000, 1024, 65536 * 4), [Some(128), Some(900), None], 4);
        assert_eq!(fields(&decision), [("gc_thresh2".into(), 1024), ("gc_thresh1".into(), 160)]);
    }

    #[test]
    fn the_others_move_without_gc_thresh1() {
        let mut lane = Lane::default();
        let decision = lane.decide(&table(900, 1024, 65536 * 4), [None, Some(512), Some(1024)], 4);
        assert_eq!(fields(&decision), [("gc_thresh3".into(), 1280), ("gc_thresh2".into(), 640)]);
        let decision = lane.decide(&table(100, 2000, 1 << 20), [None, Some(1000), Some(2000)], 4);
        assert_eq!(fields(&decision), [("gc_thresh2".into(), 750), ("gc_thresh3".into(), 1500)]);
    }
}
