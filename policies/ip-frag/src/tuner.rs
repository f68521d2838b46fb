//! The ip-frag decision, free of any host: grow the reassembly memory
//! threshold when fragments fill it, shrink it when reassembly failures rise
//! with it (more memory only feeds a fragment flood).
//!
//! Each namespace and family is a [`Lane`] of its own, so a threshold this
//! kernel does not have (no `net.ipv6` without IPv6) stops only its lane.

use std::collections::BTreeMap;

use wasmtune_sdk::{AddressFamily, Change, Correlation, FragmentMemory, NetnsId, rate};

pub const IPV4_HIGH_THRESH: &str = "net.ipv4.ipfrag_high_thresh";
pub const IPV6_HIGH_THRESH: &str = "net.ipv6.ip6frag_high_thresh";
/// Reassembly memory is kernel memory that cannot be swapped: 64 MiB at most.
pub const CAP: u64 = 64 << 20;
/// How far raises in a row may grow the threshold while reassembly still
/// fails for at least half of the fragments. Past it, more memory is not
/// helping, which is what a flood of fragments that never complete looks
/// like (each raise is filled at once). A growth factor rather than a count
/// of raises, so that the learning rate does not change how much memory a
/// flood is given; ×12 leaves a legitimate burst that needs ×6 before its
/// first datagram completes a margin of two.
pub const FUTILE_GROWTH: u64 = 12;

pub const SCENARIO_RAISE: &str = "need to increase IP fragmentation high threshold";
pub const SCENARIO_SHRINK: &str = "IP fragment reassembly failures rise with the threshold";

pub fn tunable(family: AddressFamily) -> &'static str {
    match family {
        AddressFamily::Ipv4 => IPV4_HIGH_THRESH,
        AddressFamily::Ipv6 => IPV6_HIGH_THRESH,
    }
}

/// Every lane the policy has seen.
#[derive(Debug, Clone, Default)]
pub struct Lanes {
    lanes: BTreeMap<(NetnsId, AddressFamily), Lane>,
}

impl Lanes {
    /// What to do about `event` with `current` as its family's threshold in
    /// force; `None` (unreadable) leaves its lane untouched and changes
    /// nothing.
    pub fn decide(&mut self, event: &FragmentMemory, current: Option<i64>, rate: u8) -> Option<Change> {
        let current = current?;
        self.lanes.entry((event.netns, event.family)).or_default().decide(event, current, rate)
    }
}

/// State of one namespace and family.
#[derive(Debug, Clone, Default)]
pub struct Lane {
    threshold_vs_failures: Correlation,
    /// The threshold when first seen: shrinking stops there.
    baseline: Option<u64>,
    /// The threshold when raises followed by memory still full and most
    /// fragments failing began; `None` once reassembly mostly succeeds.
    futile_since: Option<u64>,
    /// After futile raises: no raise until reassembly mostly succeeds again.
    holding: bool,
}

impl Lane {
    /// What to do about `event` with `current` as the threshold in force.
    pub fn decide(&mut self, event: &FragmentMemory, current: i64, rate: u8) -> Option<Change> {
        let current = current.max(0).unsigned_abs();
        let floor = *self.baseline.get_or_insert(current);
        let name = tunable(event.family);
        if event.reassembly_requests > 0 {
            let failure_rate = event.reassembly_failures as f64 / event.reassembly_requests as f64;
            self.threshold_vs_failures.push(current as f64, failure_rate);
        }
        // Failures that rise with the threshold: shrink.
        if let Some(correlation) = self.threshold_vs_failures.strong()
            && event.reassembly_failures > 0
        {
            let new = rate::lower(current, rate, floor)?;
            let reason = format!(
                "reassembly failures ({} of {} requests) rise with {name} (correlation {correlation:.2} over {} samples), which looks like a fragment flood; lowering it by {} to {new}",
                event.reassembly_failures,
                event.reassembly_requests,
                self.threshold_vs_failures.samples(),
                rate::step_percent(rate)
            );
            self.threshold_vs_failures.reset();
            return Some(Change::new(name, vec![new as i64], SCENARIO_SHRINK, reason));
        }
        let mostly_failing =
            event.reassembly_requests > 0 && event.reassembly_failures * 2 >= event.reassembly_requests;
        if !mostly_failing {
            self.futile_since = None;
            self.holding = false;
        }
        if !rate::nearly_full(event.bytes, current, rate) || self.holding {
            return None;
        }
        if mostly_failing {
            let since = *self.futile_since.get_or_insert(current);
            if current >= since.saturating_mul(FUTILE_GROWTH) {
                self.futile_since = None;
                self.holding = true;
                let reason = format!(
                    "raises took {name} from {since} to {current} bytes (x{FUTILE_GROWTH} or more) and reassembly still fails ({} of {} fragments), with memory full: more memory only feeds fragments that never complete, which looks like a fragment flood; lowering {name} back to {floor} and not raising it until reassembly mostly succeeds",
                    event.reassembly_failures, event.reassembly_requests
                );
                return (current > floor).then(|| Change::new(name, vec![floor as i64], SCENARIO_SHRINK, reason));
            }
        }
        let new = rate::raise(current, rate, CAP)?;
        let reason = format!(
            "fragments awaiting reassembly use {} of {current} bytes; raising {name} by {} to {new} so that fragments are not dropped",
            event.bytes,
            rate::step_percent(rate)
        );
        Some(Change::new(name, vec![new as i64], SCENARIO_RAISE, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(bytes: u64, failures: u64, requests: u64) -> FragmentMemory {
        FragmentMemory {
            netns: 1,
            family: AddressFamily::Ipv4,
            bytes,
            high_thresh: 4 << 20,
            reassembly_failures: failures,
            reassembly_requests: requests,
        }
    }

    #[test]
    fn nearly_full_memory_raises_the_threshold() {
        let mut lane = Lane::default();
        let change = lane.decide(&memory(4_000_000, 0, 100), 4 << 20, 4).expect("a raise");
        assert_eq!(change.name, IPV4_HIGH_THRESH);
        assert_eq!(change.fields, vec![5 << 20]);
        assert_eq!(change.scenario, SCENARIO_RAISE);
        assert!(lane.decide(&memory(1_000_000, 0, 100), 4 << 20, 4).is_none());
    }

    #[test]
    fn the_threshold_stops_at_64_mib() {
        let mut lane = Lane::default();
        assert!(lane.decide(&memory(CAP, 0, 1), CAP as i64, 4).is_none());
    }

    #[test]
    fn failures_rising_with_the_threshold_shrink_it_to_the_start() {
        let mut lane = Lane::default();
        let mut threshold = 4u64 << 20;
        for i in 0..9u64 {
            let change = lane.decide(&memory(threshold, i * 10, 1000), threshold as i64, 4).expect("raise");
            assert_eq!(change.scenario, SCENARIO_RAISE);
            threshold = change.fields[0] as u64;
        }
        let change = lane.decide(&memory(threshold, 200, 1000), threshold as i64, 4).expect("shrink");
        assert_eq!(change.scenario, SCENARIO_SHRINK);
        assert_eq!(change.fields, vec![(threshold - threshold / 4) as i64]);
        assert!(change.reason.contains("looks like a fragment flood"), "{}", change.reason);
        // Never below the value first seen.
        let mut lane = Lane { baseline: Some(4 << 20), ..Lane::default() };
        for i in 0..10u64 {
            lane.threshold_vs_failures.push(((4 << 20) + i) as f64, i as f64);
        }
        assert!(lane.decide(&memory(0, 5, 10), 4 << 20, 4).is_none());
    }

    #[test]
    fn raises_that_never_help_fall_back_to_the_start_and_hold() {
        let mut lane = Lane::default();
        let mut threshold = 256u64 << 10;
        while threshold < (256 << 10) * FUTILE_GROWTH {
            let change = lane.decide(&memory(threshold, 900, 1000), threshold as i64, 4).expect("raise");
            assert_eq!(change.scenario, SCENARIO_RAISE);
            threshold = change.fields[0] as u64;
        }
        assert!(threshold < (256 << 10) * FUTILE_GROWTH * 5 / 4, "one step past the growth at most: {threshold}");
        let change = lane.decide(&memory(threshold, 900, 1000), threshold as i64, 4).expect("back");
        assert_eq!(change.scenario, SCENARIO_SHRINK);
        assert_eq!(change.fields, vec![256 << 10]);
        assert!(change.reason.contains("fragments that never complete"), "{}", change.reason);
        // Held while reassembly keeps failing, released once it succeeds.
        assert!(lane.decide(&memory(256 << 10, 900, 1000), 256 << 10, 4).is_none());
        assert!(lane.decide(&memory(100, 0, 1000), 256 << 10, 4).is_none());
        assert_eq!(lane.decide(&memory(256 << 10, 100, 1000), 256 << 10, 4).expect("raise").scenario, SCENARIO_RAISE);
    }

    #[test]
    fn raises_that_help_are_not_futile() {
        let mut lane = Lane::default();
        let mut threshold = 256u64 << 10;
        for i in 0..20u64 {
            // Failures fall below half every few raises: memory is helping.
            let failures = if i % 4 == 3 { 100 } else { 900 };
            let change = lane.decide(&memory(threshold, failures, 1000), threshold as i64, 4).expect("raise");
            assert_eq!(change.scenario, SCENARIO_RAISE, "raise {i}");
            threshold = change.fields[0] as u64;
        }
    }

    #[test]
    fn ipv6_has_its_own_tunable() {
        let mut lane = Lane::default();
        let event = FragmentMemory { family: AddressFamily::Ipv6, ..memory(4_000_000, 0, 0) };
        assert_eq!(lane.decide(&event, 4 << 20, 4).expect("raise").name, IPV6_HIGH_THRESH);
    }

    #[test]
    fn ipv4_is_still_tuned_on_a_kernel_without_ipv6() {
        let mut lanes = Lanes::default();
        let ipv6 = FragmentMemory { family: AddressFamily::Ipv6, ..memory(4_000_000, 0, 100) };
        assert!(lanes.decide(&ipv6, None, 4).is_none());
        let change = lanes.decide(&memory(4_000_000, 0, 100), Some(4 << 20), 4).expect("a raise");
        assert_eq!((change.name.as_str(), change.fields[0]), (IPV4_HIGH_THRESH, 5 << 20));
        assert_eq!(lanes.lanes.len(), 1, "no IPv6 lane without its threshold");
    }
}
