//! The net-buffer decisions, free of any host: backlog drops counted per
//! minute against `netdev_max_backlog / 32`, the flow-limit CPU bitmap, and
//! the NAPI budget with its two guards: squeezes rising with the budget
//! (correlation), and squeezes not halving although the budget has doubled.

use wasmtune_sdk::{BacklogDrops, Change, Correlation, InstantMs, SoftnetSqueeze, rate};

pub const MAX_BACKLOG: &str = "net.core.netdev_max_backlog";
pub const FLOW_LIMIT_BITMAP: &str = "net.core.flow_limit_cpu_bitmap";
pub const BUDGET: &str = "net.core.netdev_budget";
pub const BUDGET_USECS: &str = "net.core.netdev_budget_usecs";

/// Highest backlog the policy sets (packets per CPU queue).
pub const MAX_BACKLOG_CAP: u64 = 1 << 20;
/// Highest NAPI budget (packets per softirq run).
pub const BUDGET_CAP: u64 = 16384;
/// Softirq runs longer than 50 ms starve everything else on the CPU.
pub const BUDGET_USECS_CAP: u64 = 50_000;
/// Drops are counted over this window.
pub const DROP_WINDOW_MS: InstantMs = 60_000;
/// Budget raises are at least this far apart, so each one's effect is seen.
pub const SQUEEZE_INTERVAL_MS: InstantMs = 5_000;
/// Above this correlation between budget and squeeze rate, more budget is
/// not helping: the CPU is the limit and longer runs only add latency.
pub const SQUEEZE_CORRELATION: f64 = 0.75;
/// A budget this many times the one squeezes were first seen at should have
/// helped: if the squeeze rate has not at least halved, the CPU is the limit.
pub const UNHELPFUL_BUDGET_FACTOR: i64 = 2;
/// After giving up on the budget, this long without raising it again.
pub const GIVE_UP_HOLD_MS: InstantMs = 600_000;
/// Squeezes this long after the last budget change start a new episode,
/// judged afresh.
pub const SQUEEZE_EPISODE_GAP_MS: InstantMs = 600_000;

pub const SCENARIO_BACKLOG: &str = "need to increase max backlog size";
pub const SCENARIO_FLOW_LIMIT: &str = "need to enable flow limits on a CPU";
pub const SCENARIO_BUDGET: &str = "need to increase NAPI budget";
pub const SCENARIO_BUDGET_SHRINK: &str = "NAPI budget increase did not help";

/// The CPU mask as the kernel prints it (hex digits), read back by the host
/// as a decimal integer when it has no hex letters. `None` if unreadable.
pub fn mask_from_kernel(printed: i64) -> Option<u64> {
    u64::from_str_radix(&printed.to_string(), 16).ok()
}

/// The integer the host must write so that the kernel, which parses hex,
/// reads `mask`. `None` when the hex form has letters (a-f), which an
/// integer sysctl value cannot carry.
pub fn mask_to_kernel(mask: u64) -> Option<i64> {
    format!("{mask:x}").parse().ok()
}

/// Per-namespace state (these tunables exist only in the initial namespace).
#[derive(Debug, Clone, Default)]
pub struct NetBuffer {
    window_start: Option<InstantMs>,
    window_drops: u64,
    budget_vs_squeezes: Correlation,
    last_budget_change: Option<InstantMs>,
    /// (budget, usecs) when first seen: never shrunk below.
    baseline: Option<(i64, i64)>,
    /// (budget, squeezes per packet) when this episode's first raise was
    /// decided: what later raises are judged against.
    episode_start: Option<(i64, f64)>,
    /// No raises before this (the budget did not help).
    holding_until: Option<InstantMs>,
}

impl NetBuffer {
    /// Drops reported by `event`, with `backlog` and the flow-limit `bitmap`
    /// (as read) in force. Returns the changes to request, in order.
    pub fn on_drops(
        &mut self,
        event: &BacklogDrops,
        backlog: i64,
        bitmap: i64,
        rate: u8,
        now: InstantMs,
    ) -> Vec<Change> {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_sub(start) >= DROP_WINDOW_MS {
            self.window_start = Some(now);
            self.window_drops = 0;
        }
        self.window_drops = self.window_drops.saturating_add(event.drops);
        let backlog = backlog.max(1).unsigned_abs();
        let threshold = (backlog / 32).max(1);
        if self.window_drops < threshold {
            return vec![];
        }
        let drops = std::mem::take(&mut self.window_drops);
        self.window_start = Some(now);
        let mut changes = vec![];
        if let Some(new) = rate::raise(backlog, rate, MAX_BACKLOG_CAP) {
            let reason = format!(
                "{drops} packets dropped within a minute because CPU {}'s input backlog was full (threshold {threshold}, netdev_max_backlog/32); raising netdev_max_backlog by {} to {new}",
                event.cpu,
                rate::step_percent(rate)
            );
            changes.push(Change::new(MAX_BACKLOG, vec![new as i64], SCENARIO_BACKLOG, reason));
        }
        if event.cpu < 64
            && let Some(mask) = mask_from_kernel(bitmap)
        {
            let with_cpu = mask | (1 << event.cpu);
            if with_cpu != mask
                && let Some(value) = mask_to_kernel(with_cpu)
            {
                let reason = format!(
                    "CPU {} drops backlog packets; enabling flow limits there so that the busiest flows are dropped first and small flows get through (bitmap {mask:x} -> {with_cpu:x})",
                    event.cpu
                );
                changes.push(Change::new(FLOW_LIMIT_BITMAP, vec![value], SCENARIO_FLOW_LIMIT, reason));
            }
        }
        changes
    }

    /// Squeezes reported by `event` with `budget` and `usecs` in force.
    pub fn on_squeeze(
        &mut self,
        event: &SoftnetSqueeze,
        budget: i64,
        usecs: i64,
        rate: u8,
        now: InstantMs,
    ) -> Vec<Change> {
        let (floor_budget, floor_usecs) = *self.baseline.get_or_insert((budget, usecs));
        if event.processed > 0 {
            let squeeze_rate = event.squeezes as f64 / event.processed as f64;
            self.budget_vs_squeezes.push(budget as f64, squeeze_rate);
        }
        if event.squeezes == 0 {
            return vec![];
        }
        if self.last_budget_change.is_some_and(|at| now.saturating_sub(at) < SQUEEZE_INTERVAL_MS) {
            return vec![];
        }
        if self.holding_until.is_some_and(|until| now < until) {
            return vec![];
        }
        if self.last_budget_change.is_none_or(|at| now.saturating_sub(at) >= SQUEEZE_EPISODE_GAP_MS) {
            self.episode_start = None;
        }
        if event.processed > 0 {
            let squeeze_rate = event.squeezes as f64 / event.processed as f64;
            match self.episode_start {
                None => self.episode_start = Some((budget, squeeze_rate)),
                Some((from, rate_then))
                    if from > 0
                        && budget >= from.saturating_mul(UNHELPFUL_BUDGET_FACTOR)
                        && squeeze_rate > rate_then / 2.0 =>
                {
                    return self.give_up(budget, usecs, (from, rate_then), squeeze_rate, now);
                }
                Some(_) => {}
            }
        }
        let (budget_u, usecs_u) = (budget.max(0).unsigned_abs(), usecs.max(0).unsigned_abs());
        if let Some(correlation) = self.budget_vs_squeezes.value().filter(|r| *r > SQUEEZE_CORRELATION) {
            let new_budget = rate::lower(budget_u, rate, floor_budget.max(0).unsigned_abs());
            let new_usecs = rate::lower(usecs_u, rate, floor_usecs.max(0).unsigned_abs());
            let mut changes = vec![];
            let why = format!(
                "squeezes rose with the NAPI budget (correlation {correlation:.2} over {} samples): the CPU, not the budget, is the limit",
                self.budget_vs_squeezes.samples()
            );
            if let Some(new) = new_budget {
                let reason = format!("{why}; lowering netdev_budget to {new}");
                changes.push(Change::new(BUDGET, vec![new as i64], SCENARIO_BUDGET_SHRINK, reason));
            }
            if let Some(new) = new_usecs {
                let reason = format!("{why}; lowering netdev_budget_usecs to {new}");
                changes.push(Change::new(BUDGET_USECS, vec![new as i64], SCENARIO_BUDGET_SHRINK, reason));
            }
            if !changes.is_empty() {
                self.last_budget_change = Some(now);
                // Start the evidence afresh at the lowered budget.
                self.budget_vs_squeezes.reset();
            }
            return changes;
        }
        let mut changes = vec![];
        let why =
            format!("CPU {} ran out of NAPI budget {} times in {} packets", event.cpu, event.squeezes, event.processed);
        if let Some(new) = rate::raise(budget_u, rate, BUDGET_CAP) {
            let reason = format!("{why}; raising netdev_budget by {} to {new}", rate::step_percent(rate));
            changes.push(Change::new(BUDGET, vec![new as i64], SCENARIO_BUDGET, reason));
        }
        if let Some(new) = rate::raise(usecs_u, rate, BUDGET_USECS_CAP) {
            let reason = format!("{why}; raising netdev_budget_usecs by {} to {new}", rate::step_percent(rate));
            changes.push(Change::new(BUDGET_USECS, vec![new as i64], SCENARIO_BUDGET, reason));
        }
        if !changes.is_empty() {
            self.last_budget_change = Some(now);
        }
        changes
    }

    /// The budget has grown `UNHELPFUL_BUDGET_FACTOR` times since `started`
    /// (budget, squeeze rate) and squeezes have not halved: back to the
    /// values the policy found, and no raise for `GIVE_UP_HOLD_MS`.
    fn give_up(&mut self, budget: i64, usecs: i64, started: (i64, f64), rate_now: f64, now: InstantMs) -> Vec<Change> {
        let (floor_budget, floor_usecs) = self.baseline.unwrap_or((budget, usecs));
        let (from, rate_then) = started;
        let why = format!(
            "netdev_budget went from {from} to {budget} but squeezes per packet did not halve ({rate_then:.4} -> {rate_now:.4}): more budget is not helping here; no more raises for {} minutes",
            GIVE_UP_HOLD_MS / 60_000
        );
        let mut changes = vec![];
        if budget > floor_budget {
            let reason = format!("{why}; netdev_budget back to {floor_budget}");
            changes.push(Change::new(BUDGET, vec![floor_budget], SCENARIO_BUDGET_SHRINK, reason));
        }
        if usecs > floor_usecs {
            let reason = format!("{why}; netdev_budget_usecs back to {floor_usecs}");
            changes.push(Change::new(BUDGET_USECS, vec![floor_usecs], SCENARIO_BUDGET_SHRINK, reason));
        }
        self.holding_until = Some(now.saturating_add(GIVE_UP_HOLD_MS));
        self.last_budget_change = Some(now);
        self.episode_start = None;
        self.budget_vs_squeezes.reset();
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drops(cpu: u32, drops: u64) -> BacklogDrops {
        BacklogDrops { netns: 1, cpu, drops, max_backlog: 1000 }
    }

    fn squeeze(squeezes: u64, processed: u64) -> SoftnetSqueeze {
        SoftnetSqueeze { netns: 1, cpu: 0, squeezes, processed }
    }

    #[test]
    fn kernel_masks_are_hex_read_as_decimal() {
        assert_eq!(mask_from_kernel(0), Some(0));
        assert_eq!(mask_from_kernel(3), Some(3));
        assert_eq!(mask_from_kernel(10), Some(16), "\"10\" is CPU 4");
        assert_eq!(mask_to_kernel(16), Some(10));
        assert_eq!(mask_to_kernel(10), None, "\"a\" cannot be written as an integer");
    }

    #[test]
    fn drops_below_a_32nd_of_the_backlog_per_minute_change_nothing() {
        let mut tuner = NetBuffer::default();
        assert!(tuner.on_drops(&drops(0, 20), 1000, 0, 4, 0).is_empty());
        assert!(tuner.on_drops(&drops(0, 10), 1000, 0, 4, 30_000).is_empty());
        // The window restarted: old drops no longer count.
        assert!(tuner.on_drops(&drops(0, 30), 1000, 0, 4, 61_000).is_empty());
    }

    #[test]
    fn enough_drops_raise_the_backlog_and_flag_the_cpu() {
        let mut tuner = NetBuffer::default();
        assert!(tuner.on_drops(&drops(1, 20), 1000, 0, 4, 0).is_empty());
        let changes = tuner.on_drops(&drops(1, 11), 1000, 0, 4, 1000);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].name, MAX_BACKLOG);
        assert_eq!(changes[0].fields, vec![1250]);
        assert_eq!(changes[0].scenario, SCENARIO_BACKLOG);
        assert!(
            changes[0].reason.starts_with("31 packets dropped within a minute because CPU 1"),
            "{}",
            changes[0].reason
        );
        assert_eq!(changes[1].name, FLOW_LIMIT_BITMAP);
        assert_eq!(changes[1].fields, vec![2]);
        // The CPU's bit is already set next time.
        let changes = tuner.on_drops(&drops(1, 100), 1250, 2, 4, 2000);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].fields, vec![1562]);
    }

    #[test]
    fn the_backlog_stops_at_its_cap() {
        let mut tuner = NetBuffer::default();
        let cap = MAX_BACKLOG_CAP as i64;
        let changes = tuner.on_drops(&drops(0, 1 << 20), cap, 1, 4, 0);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn squeezes_raise_budget_and_time_with_the_usecs_cap() {
        let mut tuner = NetBuffer::default();
        let changes = tuner.on_squeeze(&squeeze(5, 10_000), 300, 45_000, 4, 0);
        assert_eq!(changes.len(), 2);
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (BUDGET, 375));
        assert_eq!((changes[1].name.as_str(), changes[1].fields[0]), (BUDGET_USECS, 50_000));
        // Not again until its effect could be seen.
        assert!(tuner.on_squeeze(&squeeze(5, 10_000), 375, 50_000, 4, 1000).is_empty());
        let changes = tuner.on_squeeze(&squeeze(5, 10_000), 375, 50_000, 4, 6000);
        assert_eq!(changes.len(), 1, "usecs is at its cap: {changes:?}");
    }

    #[test]
    fn no_squeezes_no_change() {
        let mut tuner = NetBuffer::default();
        assert!(tuner.on_squeeze(&squeeze(0, 10_000), 300, 2000, 4, 0).is_empty());
    }

    #[test]
    fn a_doubled_budget_that_does_not_halve_squeezes_goes_back_and_holds() {
        let mut tuner = NetBuffer::default();
        let (mut budget, mut usecs, mut now) = (300i64, 2000i64, 0);
        // Each raise: one squeeze per 128 packets, as before.
        while budget < 600 {
            let changes = tuner.on_squeeze(&squeeze(10, 1280), budget, usecs, 4, now);
            assert_eq!(changes[0].scenario, SCENARIO_BUDGET, "{changes:?}");
            budget = changes[0].fields[0];
            usecs = changes[1].fields[0];
            now += SQUEEZE_INTERVAL_MS;
        }
        assert_eq!(budget, 731, "300 -> 375 -> 468 -> 585 -> 731: twice 300");
        let changes = tuner.on_squeeze(&squeeze(10, 1280), budget, usecs, 4, now);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].scenario, SCENARIO_BUDGET_SHRINK);
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (BUDGET, 300));
        assert_eq!((changes[1].name.as_str(), changes[1].fields[0]), (BUDGET_USECS, 2000));
        assert!(changes[0].reason.contains("did not halve"), "{}", changes[0].reason);
        // Held: squeezes go on, the budget stays.
        let held = tuner.on_squeeze(&squeeze(10, 1280), 300, 2000, 4, now + SQUEEZE_INTERVAL_MS);
        assert!(held.is_empty(), "{held:?}");
        // After the hold, a new episode may raise again.
        let later = now + GIVE_UP_HOLD_MS + 1;
        let again = tuner.on_squeeze(&squeeze(10, 1280), 300, 2000, 4, later);
        assert_eq!(again[0].scenario, SCENARIO_BUDGET, "{again:?}");
    }

    #[test]
    fn raises_that_cut_squeezes_keep_going() {
        let mut tuner = NetBuffer::default();
        let (mut budget, mut now, mut squeezes) = (300i64, 0, 64u64);
        for _ in 0..8 {
            let changes = tuner.on_squeeze(&squeeze(squeezes, 10_000), budget, 8000, 4, now);
            assert_eq!(changes[0].scenario, SCENARIO_BUDGET, "{changes:?}");
            budget = changes[0].fields[0];
            squeezes = (squeezes / 2).max(1);
            now += SQUEEZE_INTERVAL_MS;
        }
        assert!(budget > 900, "{budget}");
    }

    #[test]
    fn squeezes_rising_with_the_budget_lower_it_back_toward_the_start() {
        let mut tuner = NetBuffer { baseline: Some((300, 2000)), ..NetBuffer::default() };
        for i in 0..12u32 {
            // Each time: a higher budget, and more squeezes per packet.
            tuner.budget_vs_squeezes.push(f64::from(300 + i * 100), f64::from(i) / 1000.0);
        }
        let changes = tuner.on_squeeze(&squeeze(20, 1000), 1500, 4000, 4, 10_000);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].scenario, SCENARIO_BUDGET_SHRINK);
        assert_eq!(changes[0].fields, vec![1125]);
        assert_eq!(changes[1].fields, vec![3000]);
        assert!(changes[0].reason.starts_with("squeezes rose with the NAPI budget"), "{}", changes[0].reason);
    }
}
