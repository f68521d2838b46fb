//! The neigh decision, free of any host: grow the three gc thresholds of a
//! family's default table when entries near `gc_thresh3`, within the address
//! space the devices can actually use; shrink them back when the table
//! holds a quarter of `gc_thresh3` or less.

use wasmtune_sdk::{AddressFamily, Change, NeighbourTable, rate};

/// The kernel's defaults, which shrinking never goes below.
pub const FLOORS: [u64; 3] = [128, 512, 1024];
/// The manifest's ceiling, whatever the address space says.
pub const HARD_CAP: u64 = 16 << 20;

pub const SCENARIO_RAISE: &str = "neighbour table nearly full";
pub const SCENARIO_SHRINK: &str = "neighbour table mostly empty";

/// `gc_thresh1..3` of `family`'s default table.
pub fn tunables(family: AddressFamily) -> [&'static str; 3] {
    match family {
        AddressFamily::Ipv4 => [
            "net.ipv4.neigh.default.gc_thresh1",
            "net.ipv4.neigh.default.gc_thresh2",
            "net.ipv4.neigh.default.gc_thresh3",
        ],
        AddressFamily::Ipv6 => [
            "net.ipv6.neigh.default.gc_thresh1",
            "net.ipv6.neigh.default.gc_thresh2",
            "net.ipv6.neigh.default.gc_thresh3",
        ],
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
    /// The thresholds when first seen: shrinking never goes below them.
    baseline: Option<[u64; 3]>,
}

impl Lane {
    pub fn decide(&mut self, table: &NeighbourTable, current: [i64; 3], rate: u8) -> Decision {
        let current = current.map(|v| v.max(0).unsigned_abs());
        let baseline = *self.baseline.get_or_insert(current);
        let names = tunables(table.family);
        let entries = u64::from(table.entries);
        let [t1, t2, t3] = current;
        if rate::nearly_full(entries, t3, rate) {
            let cap = table.address_space.clamp(FLOORS[2], HARD_CAP);
            let Some(new3) = rate::raise(t3, rate, cap) else { return Decision::CapReached { cap } };
            let new2 = rate::raise(t2, rate, new3).unwrap_or(t2).min(new3);
            let new1 = rate::raise(t1, rate, new2).unwrap_or(t1).min(new2);
            let why = format!(
                "the {} neighbour table holds {entries} entries of gc_thresh3 {t3} (address space {}); raising the gc thresholds by {} so that entries are not evicted",
                family_name(table.family),
                table.address_space,
                rate::step_percent(rate)
            );
            let planned = [(2, t3, new3), (1, t2, new2), (0, t1, new1)];
            return Decision::Change(changes(&names, &planned, SCENARIO_RAISE, &why));
        }
        if entries <= t3 / 4 {
            let floor = |i: usize| FLOORS[i].max(baseline[i]);
            let new1 = rate::lower(t1, rate, floor(0)).unwrap_or(t1);
            let new2 = rate::lower(t2, rate, floor(1).max(new1)).unwrap_or(t2);
            let new3 = rate::lower(t3, rate, floor(2).max(new2)).unwrap_or(t3);
            let why = format!(
                "the {} neighbour table holds only {entries} entries of gc_thresh3 {t3}; lowering the gc thresholds by {} toward their starting values",
                family_name(table.family),
                rate::step_percent(rate)
            );
            let planned = [(0, t1, new1), (1, t2, new2), (2, t3, new3)];
            let changes = changes(&names, &planned, SCENARIO_SHRINK, &why);
            return if changes.is_empty() { Decision::Skip } else { Decision::Change(changes) };
        }
        Decision::Skip
    }
}

fn family_name(family: AddressFamily) -> &'static str {
    match family {
        AddressFamily::Ipv4 => "IPv4",
        AddressFamily::Ipv6 => "IPv6",
    }
}

/// One change per threshold that moves, in `planned` order.
fn changes(names: &[&str; 3], planned: &[(usize, u64, u64)], scenario: &str, why: &str) -> Vec<Change> {
    planned
        .iter()
        .filter(|(_, old, new)| old != new)
        .map(|&(i, old, new)| {
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

    fn fields(decision: &Decision) -> Vec<(String, i64)> {
        let Decision::Change(changes) = decision else { panic!("{decision:?}") };
        changes.iter().map(|c| (c.name.rsplit('.').next().unwrap_or("").to_string(), c.fields[0])).collect()
    }

    #[test]
    fn a_nearly_full_table_raises_all_three_highest_first() {
        let mut lane = Lane::default();
        let decision = lane.decide(&table(900, 1024, 65536 * 4), [128, 512, 1024], 4);
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
        let decision = lane.decide(&table(1100, 1200, 1300), [128, 512, 1200], 4);
        assert_eq!(fields(&decision)[0], ("gc_thresh3".into(), 1300));
        assert_eq!(lane.decide(&table(1250, 1300, 1300), [128, 640, 1300], 4), Decision::CapReached { cap: 1300 });
    }

    #[test]
    fn an_empty_table_shrinks_back_but_not_below_the_start() {
        let mut lane = Lane::default();
        // First seen at the defaults, then raised.
        let _ = lane.decide(&table(500, 1024, 1 << 20), [128, 512, 1024], 4);
        let decision = lane.decide(&table(100, 2000, 1 << 20), [250, 1000, 2000], 4);
        assert_eq!(
            fields(&decision),
            [("gc_thresh1".into(), 188), ("gc_thresh2".into(), 750), ("gc_thresh3".into(), 1500)]
        );
        assert_eq!(lane.decide(&table(10, 1024, 1 << 20), [128, 512, 1024], 4), Decision::Skip);
    }

    #[test]
    fn an_administrators_larger_start_is_kept() {
        let mut lane = Lane::default();
        assert_eq!(lane.decide(&table(10, 8192, 1 << 20), [4096, 6144, 8192], 4), Decision::Skip);
    }

    #[test]
    fn a_table_in_between_is_left_alone() {
        let mut lane = Lane::default();
        assert_eq!(lane.decide(&table(500, 1024, 1 << 20), [128, 512, 1024], 4), Decision::Skip);
    }
}
