//! The net-buffer decisions, free of any host: backlog drops counted per
//! minute against `netdev_max_backlog / 32`, the flow-limit CPU bitmap, and
//! the NAPI budget with its two guards: squeezes rising with the budget
//! (correlation), and squeezes not halving although the budget has doubled.
//!
//! Every tunable comes in as an `Option`: `None` is one this kernel does not
//! have (or the host would not let the policy read), and only the changes to
//! it are skipped; the other tunables are still decided on.

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
/// The correlation guard speaks only once samples span this many budgets.
pub const MIN_DISTINCT_BUDGETS: usize = 3;
/// Budget raises are at least this far apart, so each one's effect is seen.
pub const SQUEEZE_INTERVAL_MS: InstantMs = 5_000;
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

/// `netdev_max_backlog` raised a step after `drops` reached `threshold`;
/// `None` at the cap.
fn raise_backlog(event: &BacklogDrops, backlog: i64, drops: u64, threshold: u64, rate: u8) -> Option<Change> {
    let new = rate::raise(backlog.max(1).unsigned_abs(), rate, MAX_BACKLOG_CAP)?;
    let reason = format!(
        "{drops} packets dropped within a minute because CPU {}'s input backlog was full (threshold {threshold}, netdev_max_backlog/32); raising netdev_max_backlog by {} to {new}",
        event.cpu,
        rate::step_percent(rate)
    );
    Some(Change::new(MAX_BACKLOG, vec![new as i64], SCENARIO_BACKLOG, reason))
}

/// The dropping CPU's bit set in the flow-limit `bitmap`; `None` when it is
/// already set or cannot be expressed (CPU 64 and up, hex letters).
fn flag_cpu(event: &BacklogDrops, bitmap: i64) -> Option<Change> {
    if event.cpu >= 64 {
        return None;
    }
    let mask = mask_from_kernel(bitmap)?;
    let with_cpu = mask | (1 << event.cpu);
    if with_cpu == mask {
        return None;
    }
    let value = mask_to_kernel(with_cpu)?;
    let reason = format!(
        "CPU {} drops backlog packets; enabling flow limits there so that the busiest flows are dropped first and small flows get through (bitmap {mask:x} -> {with_cpu:x})",
        event.cpu
    );
    Some(Change::new(FLOW_LIMIT_BITMAP, vec![value], SCENARIO_FLOW_LIMIT, reason))
}

/// Per-namespace state (these tunables exist only in the initial namespace).
#[derive(Debug, Clone, Default)]
pub struct NetBuffer {
    window_start: Option<InstantMs>,
    window_drops: u64,
    budget_vs_squeezes: Correlation,
    /// Distinct budgets among those samples (up to [`MIN_DISTINCT_BUDGETS`]).
    budgets_seen: Vec<i64>,
    last_budget_change: Option<InstantMs>,
    /// (budget, usecs), each when first read: never shrunk below.
    baseline: [Option<i64>; 2],
    /// The budget the guards judge by (see [`NetBuffer::gauge`]).
    gauged_by: Option<&'static str>,
    /// (gauge, squeezes per packet) when this episode's first raise was
    /// decided: what later raises are judged against.
    episode_start: Option<(i64, f64)>,
    /// No raises before this (the budget did not help).
    holding_until: Option<InstantMs>,
}

impl NetBuffer {
    /// Drops reported by `event`, with `backlog` and the flow-limit `bitmap`
    /// (as read; `None` when unreadable) in force. Returns the changes to
    /// request, in order.
    pub fn on_drops(
        &mut self,
        event: &BacklogDrops,
        backlog: Option<i64>,
        bitmap: Option<i64>,
        rate: u8,
        now: InstantMs,
    ) -> Vec<Change> {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_sub(start) >= DROP_WINDOW_MS {
            self.window_start = Some(now);
            self.window_drops = 0;
        }
        self.window_drops = self.window_drops.saturating_add(event.drops);
        // Without a readable netdev_max_backlog the drops are still judged
        // against the backlog the kernel reported with them: flow limits
        // help whatever the backlog size (the busiest flows are dropped
        // first from a full queue), so the bitmap is still worth setting.
        let judged_against = backlog.unwrap_or(i64::from(event.max_backlog)).max(1).unsigned_abs();
        let threshold = (judged_against / 32).max(1);
        if self.window_drops < threshold {
            return vec![];
        }
        let drops = std::mem::take(&mut self.window_drops);
        self.window_start = Some(now);
        let backlog_change = backlog.and_then(|backlog| raise_backlog(event, backlog, drops, threshold, rate));
        let flow_limit_change = bitmap.and_then(|bitmap| flag_cpu(event, bitmap));
        backlog_change.into_iter().chain(flow_limit_change).collect()
    }

    /// Squeezes reported by `event` with `budget` and `usecs` in force (as
    /// read; `None` when unreadable). Each is raised or lowered on its own;
    /// the guards judge by [`NetBuffer::gauge`].
    pub fn on_squeeze(
        &mut self,
        event: &SoftnetSqueeze,
        budget: Option<i64>,
        usecs: Option<i64>,
        rate: u8,
        now: InstantMs,
    ) -> Vec<Change> {
        let current = [budget, usecs];
        for (floor, value) in self.baseline.iter_mut().zip(current) {
            if floor.is_none() {
                *floor = value;
            }
        }
        let Some(gauge) = self.gauge(current) else { return vec![] };
        let squeeze_rate = (event.processed > 0).then(|| event.squeezes as f64 / event.processed as f64);
        if let Some(squeeze_rate) = squeeze_rate {
            self.observe(gauge.1, squeeze_rate);
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
        if let Some(squeeze_rate) = squeeze_rate {
            match self.episode_start {
                None => self.episode_start = Some((gauge.1, squeeze_rate)),
                Some((from, rate_then))
                    if from > 0
                        && gauge.1 >= from.saturating_mul(UNHELPFUL_BUDGET_FACTOR)
                        && squeeze_rate > rate_then / 2.0 =>
                {
                    return self.give_up(current, gauge, (from, rate_then), squeeze_rate, now);
                }
                Some(_) => {}
            }
        }
        // Squeezes that rise with the budget: more budget is not helping, the
        // CPU is the limit and longer runs only add latency.
        if let Some(correlation) = self.budget_vs_squeezes.strong().filter(|_| self.enough_budgets()) {
            return self.lower(current, correlation, rate, now);
        }
        self.raise(event, current, rate, now)
    }

    /// One (budget, squeezes per packet) sample for the correlation guard.
    fn observe(&mut self, budget: i64, squeeze_rate: f64) {
        self.budget_vs_squeezes.push(budget as f64, squeeze_rate);
        if !self.enough_budgets() && !self.budgets_seen.contains(&budget) {
            self.budgets_seen.push(budget);
        }
    }

    /// Samples at one or two budgets correlate with anything that drifts
    /// (a flow warming up), so they are no evidence that the budget is to
    /// blame.
    fn enough_budgets(&self) -> bool {
        self.budgets_seen.len() >= MIN_DISTINCT_BUDGETS
    }

    fn forget_samples(&mut self) {
        self.budget_vs_squeezes.reset();
        self.budgets_seen.clear();
    }

    /// The budget the guards judge by, with its value: `netdev_budget`, or
    /// on a kernel without it `netdev_budget_usecs`. Evidence gathered on one
    /// says nothing about the other, so a switch starts it afresh.
    fn gauge(&mut self, current: [Option<i64>; 2]) -> Option<(Lever, i64)> {
        let (lever, value) = LEVERS.into_iter().zip(current).find_map(|(lever, value)| Some((lever, value?)))?;
        if self.gauged_by.replace(lever.name).is_some_and(|before| before != lever.name) {
            self.forget_samples();
            self.episode_start = None;
        }
        Some((lever, value))
    }

    /// Squeezes rose with the budget: each readable budget a step back
    /// toward its first value.
    fn lower(&mut self, current: [Option<i64>; 2], correlation: f64, rate: u8, now: InstantMs) -> Vec<Change> {
        let why = format!(
            "squeezes rose with the NAPI budget (correlation {correlation:.2} over {} samples): the CPU, not the budget, is the limit",
            self.budget_vs_squeezes.samples()
        );
        let changes: Vec<Change> = readable(current, self.baseline)
            .filter_map(|(lever, value, floor)| {
                let new = rate::lower(value.max(0).unsigned_abs(), rate, floor.max(0).unsigned_abs())?;
                let reason = format!("{why}; lowering {} to {new}", lever.short);
                Some(Change::new(lever.name, vec![new as i64], SCENARIO_BUDGET_SHRINK, reason))
            })
            .collect();
        if !changes.is_empty() {
            self.last_budget_change = Some(now);
            // Start the evidence afresh at the lowered budget.
            self.forget_samples();
        }
        changes
    }

    /// Each readable budget a step up, within its cap.
    fn raise(&mut self, event: &SoftnetSqueeze, current: [Option<i64>; 2], rate: u8, now: InstantMs) -> Vec<Change> {
        let why =
            format!("CPU {} ran out of NAPI budget {} times in {} packets", event.cpu, event.squeezes, event.processed);
        let changes: Vec<Change> = readable(current, self.baseline)
            .filter_map(|(lever, value, _)| {
                let new = rate::raise(value.max(0).unsigned_abs(), rate, lever.cap)?;
                let reason = format!("{why}; raising {} by {} to {new}", lever.short, rate::step_percent(rate));
                Some(Change::new(lever.name, vec![new as i64], SCENARIO_BUDGET, reason))
            })
            .collect();
        if !changes.is_empty() {
            self.last_budget_change = Some(now);
        }
        changes
    }

    /// The gauge has grown `UNHELPFUL_BUDGET_FACTOR` times since `started`
    /// (its value, squeeze rate) and squeezes have not halved: each readable
    /// budget back to the value the policy found, and no raise for
    /// `GIVE_UP_HOLD_MS`.
    fn give_up(
        &mut self,
        current: [Option<i64>; 2],
        gauge: (Lever, i64),
        started: (i64, f64),
        rate_now: f64,
        now: InstantMs,
    ) -> Vec<Change> {
        let ((lever, value), (from, rate_then)) = (gauge, started);
        let why = format!(
            "{} went from {from} to {value} but squeezes per packet did not halve ({rate_then:.4} -> {rate_now:.4}): more budget is not helping here; no more raises for {} minutes",
            lever.short,
            GIVE_UP_HOLD_MS / 60_000
        );
        let changes = readable(current, self.baseline)
            .filter(|(_, value, floor)| value > floor)
            .map(|(lever, _, floor)| {
                let reason = format!("{why}; {} back to {floor}", lever.short);
                Change::new(lever.name, vec![floor], SCENARIO_BUDGET_SHRINK, reason)
            })
            .collect();
        self.holding_until = Some(now.saturating_add(GIVE_UP_HOLD_MS));
        self.last_budget_change = Some(now);
        self.episode_start = None;
        self.forget_samples();
        changes
    }
}

/// One of the two NAPI budgets: the packets (`netdev_budget`) and the time
/// (`netdev_budget_usecs`) a softirq run may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lever {
    name: &'static str,
    /// Its name in reasons.
    short: &'static str,
    cap: u64,
}

/// The budgets in the order they are decided and requested.
const LEVERS: [Lever; 2] = [
    Lever { name: BUDGET, short: "netdev_budget", cap: BUDGET_CAP },
    Lever { name: BUDGET_USECS, short: "netdev_budget_usecs", cap: BUDGET_USECS_CAP },
];

/// The budgets read this time, each with its value and its floor (the
/// value first seen).
fn readable(current: [Option<i64>; 2], baseline: [Option<i64>; 2]) -> impl Iterator<Item = (Lever, i64, i64)> {
    LEVERS.into_iter().zip(current).zip(baseline).filter_map(|((lever, value), floor)| {
        let value = value?;
        Some((lever, value, floor.unwrap_or(value)))
    })
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
        assert!(tuner.on_drops(&drops(0, 20), Some(1000), Some(0), 4, 0).is_empty());
        assert!(tuner.on_drops(&drops(0, 10), Some(1000), Some(0), 4, 30_000).is_empty());
        // The window restarted: old drops no longer count.
        assert!(tuner.on_drops(&drops(0, 30), Some(1000), Some(0), 4, 61_000).is_empty());
    }

    #[test]
    fn enough_drops_raise_the_backlog_and_flag_the_cpu() {
        let mut tuner = NetBuffer::default();
        assert!(tuner.on_drops(&drops(1, 20), Some(1000), Some(0), 4, 0).is_empty());
        let changes = tuner.on_drops(&drops(1, 11), Some(1000), Some(0), 4, 1000);
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
        let changes = tuner.on_drops(&drops(1, 100), Some(1250), Some(2), 4, 2000);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].fields, vec![1562]);
    }

    #[test]
    fn the_backlog_stops_at_its_cap() {
        let mut tuner = NetBuffer::default();
        let cap = MAX_BACKLOG_CAP as i64;
        let changes = tuner.on_drops(&drops(0, 1 << 20), Some(cap), Some(1), 4, 0);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn squeezes_raise_budget_and_time_with_the_usecs_cap() {
        let mut tuner = NetBuffer::default();
        let changes = tuner.on_squeeze(&squeeze(5, 10_000), Some(300), Some(45_000), 4, 0);
        assert_eq!(changes.len(), 2);
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (BUDGET, 375));
        assert_eq!((changes[1].name.as_str(), changes[1].fields[0]), (BUDGET_USECS, 50_000));
        // Not again until its effect could be seen.
        assert!(tuner.on_squeeze(&squeeze(5, 10_000), Some(375), Some(50_000), 4, 1000).is_empty());
        let changes = tuner.on_squeeze(&squeeze(5, 10_000), Some(375), Some(50_000), 4, 6000);
        assert_eq!(changes.len(), 1, "usecs is at its cap: {changes:?}");
    }

    #[test]
    fn no_squeezes_no_change() {
        let mut tuner = NetBuffer::default();
        assert!(tuner.on_squeeze(&squeeze(0, 10_000), Some(300), Some(2000), 4, 0).is_empty());
    }

    #[test]
    fn a_doubled_budget_that_does_not_halve_squeezes_goes_back_and_holds() {
        let mut tuner = NetBuffer::default();
        let (mut budget, mut usecs, mut now) = (300i64, 2000i64, 0);
        // Each raise: one squeeze per 128 packets, as before.
        while budget < 600 {
            let changes = tuner.on_squeeze(&squeeze(10, 1280), Some(budget), Some(usecs), 4, now);
            assert_eq!(changes[0].scenario, SCENARIO_BUDGET, "{changes:?}");
            budget = changes[0].fields[0];
            usecs = changes[1].fields[0];
            now += SQUEEZE_INTERVAL_MS;
        }
        assert_eq!(budget, 731, "300 -> 375 -> 468 -> 585 -> 731: twice 300");
        let changes = tuner.on_squeeze(&squeeze(10, 1280), Some(budget), Some(usecs), 4, now);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].scenario, SCENARIO_BUDGET_SHRINK);
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (BUDGET, 300));
        assert_eq!((changes[1].name.as_str(), changes[1].fields[0]), (BUDGET_USECS, 2000));
        assert!(changes[0].reason.contains("did not halve"), "{}", changes[0].reason);
        // Held: squeezes go on, the budget stays.
        let held = tuner.on_squeeze(&squeeze(10, 1280), Some(300), Some(2000), 4, now + SQUEEZE_INTERVAL_MS);
        assert!(held.is_empty(), "{held:?}");
        // After the hold, a new episode may raise again.
        let later = now + GIVE_UP_HOLD_MS + 1;
        let again = tuner.on_squeeze(&squeeze(10, 1280), Some(300), Some(2000), 4, later);
        assert_eq!(again[0].scenario, SCENARIO_BUDGET, "{again:?}");
    }

    #[test]
    fn raises_that_cut_squeezes_keep_going() {
        let mut tuner = NetBuffer::default();
        let (mut budget, mut now, mut squeezes) = (300i64, 0, 64u64);
        for _ in 0..8 {
            let changes = tuner.on_squeeze(&squeeze(squeezes, 10_000), Some(budget), Some(8000), 4, now);
            assert_eq!(changes[0].scenario, SCENARIO_BUDGET, "{changes:?}");
            budget = changes[0].fields[0];
            squeezes = (squeezes / 2).max(1);
            now += SQUEEZE_INTERVAL_MS;
        }
        assert!(budget > 900, "{budget}");
    }

    #[test]
    fn squeezes_rising_with_the_budget_lower_it_back_toward_the_start() {
        let mut tuner = NetBuffer { baseline: [Some(300), Some(2000)], ..NetBuffer::default() };
        for i in 0..12u32 {
            // Each time: a higher budget, and more squeezes per packet.
            tuner.observe(i64::from(300 + i * 100), f64::from(i) / 1000.0);
        }
        let changes = tuner.on_squeeze(&squeeze(20, 1000), Some(1500), Some(4000), 4, 10_000);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].scenario, SCENARIO_BUDGET_SHRINK);
        assert_eq!(changes[0].fields, vec![1125]);
        assert_eq!(changes[1].fields, vec![3000]);
        assert!(changes[0].reason.starts_with("squeezes rose with the NAPI budget"), "{}", changes[0].reason);
    }

    #[test]
    fn squeezes_drifting_up_across_only_two_budgets_do_not_lower_it() {
        // A flow warming up right after the first raise: squeezes rise while
        // the budget went 16 -> 20. Two budgets are no evidence; raise on.
        let mut tuner = NetBuffer { baseline: [Some(16), Some(8000)], ..NetBuffer::default() };
        for i in 0..6u32 {
            tuner.observe(16, f64::from(i) / 1000.0);
            tuner.observe(20, f64::from(i + 6) / 1000.0);
        }
        assert!(tuner.budget_vs_squeezes.strong().is_some());
        let changes = tuner.on_squeeze(&squeeze(20, 1000), Some(20), Some(8000), 4, 10_000);
        assert!(changes.iter().all(|c| c.scenario == SCENARIO_BUDGET), "{changes:?}");
    }

    #[test]
    fn drops_raise_the_backlog_without_a_flow_limit_bitmap() {
        // A kernel without CONFIG_NET_FLOW_LIMIT has no flow_limit_cpu_bitmap.
        let mut tuner = NetBuffer::default();
        let changes = tuner.on_drops(&drops(1, 31), Some(1000), None, 4, 0);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (MAX_BACKLOG, 1250));
        assert_eq!(changes[0].scenario, SCENARIO_BACKLOG);
    }

    #[test]
    fn drops_flag_the_cpu_without_a_readable_backlog() {
        let mut tuner = NetBuffer::default();
        // Judged against the backlog the event carries (1000): 20 < 31.
        assert!(tuner.on_drops(&drops(2, 20), None, Some(0), 4, 0).is_empty());
        let changes = tuner.on_drops(&drops(2, 11), None, Some(0), 4, 1000);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (FLOW_LIMIT_BITMAP, 4));
    }

    #[test]
    fn drops_change_nothing_when_neither_tunable_is_readable() {
        let mut tuner = NetBuffer::default();
        assert!(tuner.on_drops(&drops(0, 1000), None, None, 4, 0).is_empty());
    }

    #[test]
    fn squeezes_raise_netdev_budget_without_the_time_budget() {
        let mut tuner = NetBuffer::default();
        let changes = tuner.on_squeeze(&squeeze(5, 10_000), Some(300), None, 4, 0);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (BUDGET, 375));
    }

    #[test]
    fn squeezes_raise_the_time_budget_without_netdev_budget_and_its_guard_still_holds() {
        let mut tuner = NetBuffer::default();
        let (mut usecs, mut now) = (2000i64, 0);
        while usecs < 4000 {
            let changes = tuner.on_squeeze(&squeeze(10, 1280), None, Some(usecs), 4, now);
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert_eq!((changes[0].name.as_str(), changes[0].scenario.as_str()), (BUDGET_USECS, SCENARIO_BUDGET));
            usecs = changes[0].fields[0];
            now += SQUEEZE_INTERVAL_MS;
        }
        // The time budget doubled and squeezes did not halve: back it goes.
        let changes = tuner.on_squeeze(&squeeze(10, 1280), None, Some(usecs), 4, now);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (BUDGET_USECS, 2000));
        assert!(changes[0].reason.starts_with("netdev_budget_usecs went from 2000"), "{}", changes[0].reason);
    }

    #[test]
    fn a_change_of_gauge_starts_the_evidence_afresh() {
        let mut tuner = NetBuffer::default();
        let _ = tuner.on_squeeze(&squeeze(10, 1280), Some(300), Some(2000), 4, 0);
        // netdev_budget unreadable this once: usecs samples must not be
        // correlated with budget samples.
        let _ = tuner.on_squeeze(&squeeze(10, 1280), None, Some(2500), 4, SQUEEZE_INTERVAL_MS);
        assert_eq!(tuner.budget_vs_squeezes.samples(), 1);
        assert_eq!(tuner.episode_start.map(|(gauge, _)| gauge), Some(2500), "a new episode, on usecs");
    }
}
