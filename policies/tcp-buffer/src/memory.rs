//! TCP memory (`tcp_mem`) decisions, free of any host: raise the limits
//! under pressure, raise the high limit when exhausted, and when that is at
//! its cap (a quarter of RAM) cut buffer maxima and enter a low-memory mode
//! that is undone when the pressure is relieved.
//!
//! `tcp_mem` and `high_order_alloc_disable` exist only in the initial
//! namespace ([`is_global`]); the other tunables are per namespace and are
//! changed in the namespace whose sockets ran short.
//!
//! Each value of the [`Snapshot`] is an `Option`: `None` is a tunable this
//! kernel does not have (`high_order_alloc_disable` is 5.2 and later) or the
//! host would not let the policy read. Only the changes to it are skipped:
//! low-memory mode still applies and later restores the others.

use wasmtune_sdk::{Change, MemoryLevel, MemoryPressure, rate, system};

pub const TCP_MEM: &str = "net.ipv4.tcp_mem";
pub const TCP_RMEM: &str = "net.ipv4.tcp_rmem";
pub const TCP_WMEM: &str = "net.ipv4.tcp_wmem";
pub const NO_METRICS_SAVE: &str = "net.ipv4.tcp_no_metrics_save";
pub const NO_SSTHRESH_METRICS_SAVE: &str = "net.ipv4.tcp_no_ssthresh_metrics_save";
pub const HIGH_ORDER_ALLOC_DISABLE: &str = "net.core.high_order_alloc_disable";
pub const MAX_SYN_BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog";
/// `tcp_max_syn_backlog` is never cut below this.
pub const SYN_BACKLOG_FLOOR: i64 = 128;

/// Whether `name` exists only in the initial namespace (one value for the
/// whole host), so that changes to it go there.
pub fn is_global(name: &str) -> bool {
    name == TCP_MEM || name == HIGH_ORDER_ALLOC_DISABLE
}

pub const SCENARIO_PRESSURE: &str = "need to increase TCP memory";
pub const SCENARIO_EXHAUSTED: &str = "TCP memory exhausted";
pub const SCENARIO_LOW_MEMORY: &str = "TCP memory exhausted at its cap: low-memory mode";
pub const SCENARIO_RELIEVED: &str = "TCP memory pressure relieved: leaving low-memory mode";

/// The values these decisions read, as the kernel shows them now; `None`
/// for one that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub tcp_mem: Option<[i64; 3]>,
    pub rmem: Option<[i64; 3]>,
    pub wmem: Option<[i64; 3]>,
    pub no_metrics_save: Option<i64>,
    pub no_ssthresh_metrics_save: Option<i64>,
    pub high_order_alloc_disable: Option<i64>,
    pub max_syn_backlog: Option<i64>,
}

/// Per-namespace memory state: the values low-memory mode replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    saved: Option<Vec<(String, Vec<i64>)>>,
}

impl MemoryState {
    pub fn in_low_memory(&self) -> bool {
        self.saved.is_some()
    }

    /// `name` is back to what low-memory mode replaced (or no longer the
    /// policy's to put back); the mode ends when nothing is left to restore.
    pub fn restored(&mut self, name: &str) {
        if let Some(saved) = &mut self.saved {
            saved.retain(|(saved_name, _)| saved_name != name);
            if saved.is_empty() {
                self.saved = None;
            }
        }
    }

    /// The values low-memory mode replaced, as text to keep across instance
    /// rebuilds (`name=v1,v2;...`); `None` outside low-memory mode.
    pub fn encode(&self) -> Option<String> {
        let saved = self.saved.as_ref()?;
        let entries: Vec<String> = saved
            .iter()
            .map(|(name, values)| {
                let values: Vec<String> = values.iter().map(i64::to_string).collect();
                format!("{name}={}", values.join(","))
            })
            .collect();
        Some(entries.join(";"))
    }

    /// The state [`MemoryState::encode`] wrote; `None` if `text` is not that.
    pub fn decode(text: &str) -> Option<MemoryState> {
        let mut saved = vec![];
        for entry in text.split(';').filter(|e| !e.is_empty()) {
            let (name, values) = entry.split_once('=')?;
            let values = values.split(',').map(|v| v.parse().ok()).collect::<Option<Vec<i64>>>()?;
            saved.push((name.to_string(), values));
        }
        Some(MemoryState { saved: Some(saved) })
    }

    /// The changes `event` calls for, in request order.
    pub fn decide(&mut self, event: &MemoryPressure, now: &Snapshot, rate: u8, cap_pages: u64) -> Vec<Change> {
        match (event.level, now.tcp_mem) {
            (MemoryLevel::Pressure, Some(tcp_mem)) => raise_under_pressure(event, tcp_mem, rate, cap_pages),
            // Without a readable tcp_mem there is nothing to raise.
            (MemoryLevel::Pressure, None) => vec![],
            (MemoryLevel::Exhausted, Some(tcp_mem)) => match raise_high_limit(event, tcp_mem, rate, cap_pages) {
                Some(change) => vec![change],
                None => self.enter_low_memory(event, now, rate, cap_pages),
            },
            // A tcp_mem this policy cannot read cannot be raised either: as
            // at its cap, the only way left is to use less.
            (MemoryLevel::Exhausted, None) => self.enter_low_memory(event, now, rate, cap_pages),
            (MemoryLevel::Relieved, _) => self.leave_low_memory(event),
        }
    }

    fn enter_low_memory(&mut self, event: &MemoryPressure, now: &Snapshot, rate: u8, cap_pages: u64) -> Vec<Change> {
        let why = match now.tcp_mem {
            Some(_) => {
                format!("TCP uses {} pages, at tcp_mem[2] which is already at its cap ({cap_pages} pages)", event.pages)
            }
            None => format!("TCP uses {} pages, at tcp_mem[2], which this policy cannot raise", event.pages),
        };
        let mut changes = vec![];
        for (name, fields) in [(TCP_RMEM, now.rmem), (TCP_WMEM, now.wmem)] {
            let Some(fields) = fields else { continue };
            let max = fields[2].max(0).unsigned_abs();
            if let Some(new) = rate::lower(max, rate, fields[1].max(0).unsigned_abs()) {
                let reason = format!("{why}; lowering {name}[2] by {} to {new} bytes", rate::step_percent(rate));
                changes.push(Change::new(name, vec![fields[0], fields[1], new as i64], SCENARIO_LOW_MEMORY, reason));
            }
        }
        if self.saved.is_none() {
            let mut saved = vec![];
            for (name, old, new, what) in low_memory_mode(now) {
                if old != new {
                    saved.push((name.to_string(), vec![old]));
                    let reason = format!("{why}; entering low-memory mode: {what} ({name} {old} -> {new})");
                    changes.push(Change::new(name, vec![new], SCENARIO_LOW_MEMORY, reason));
                }
            }
            self.saved = Some(saved);
        }
        changes
    }

    /// The values to put back. They stay saved until each is reported
    /// [`MemoryState::restored`]: a restore the host refuses for now (rate
    /// limit) is asked for again at the next relief, never forgotten.
    fn leave_low_memory(&mut self, event: &MemoryPressure) -> Vec<Change> {
        let Some(saved) = self.saved.clone() else { return vec![] };
        saved
            .into_iter()
            .map(|(name, old)| {
                let reason = format!(
                    "TCP memory fell back below tcp_mem[1] ({} pages in use); restoring {name} to {}",
                    event.pages,
                    old.first().copied().unwrap_or_default()
                );
                Change::new(&name, old, SCENARIO_RELIEVED, reason)
            })
            .collect()
    }
}

/// Under pressure: all three `tcp_mem` values a step up, within the cap.
fn raise_under_pressure(event: &MemoryPressure, tcp_mem: [i64; 3], rate: u8, cap_pages: u64) -> Vec<Change> {
    let mem = tcp_mem.map(|v| v.max(0).unsigned_abs());
    let Some(new) = system::raise_memory_limits(mem, rate, cap_pages) else { return vec![] };
    let reason = format!(
        "TCP uses {} pages, past tcp_mem[1] ({}); raising tcp_mem by {} from {} {} {} to {} {} {} pages (capped at {cap_pages} pages)",
        event.pages,
        mem[1],
        rate::step_percent(rate),
        mem[0],
        mem[1],
        mem[2],
        new[0],
        new[1],
        new[2]
    );
    vec![Change::new(TCP_MEM, new.iter().map(|v| *v as i64).collect(), SCENARIO_PRESSURE, reason)]
}

/// When exhausted: `tcp_mem[2]` a step up; `None` at the cap.
fn raise_high_limit(event: &MemoryPressure, tcp_mem: [i64; 3], rate: u8, cap_pages: u64) -> Option<Change> {
    let high_now = tcp_mem[2].max(0).unsigned_abs();
    let high = rate::raise(high_now, rate, cap_pages)?;
    let reason = format!(
        "TCP uses {} pages, at tcp_mem[2] ({high_now}): allocations fail; raising tcp_mem[2] to {high} pages (capped at {cap_pages} pages)",
        event.pages
    );
    let fields = vec![tcp_mem[0], tcp_mem[1], high as i64];
    Some(Change::new(TCP_MEM, fields, SCENARIO_EXHAUSTED, reason))
}

/// The low-memory mode settings that can be read here: (tunable, value now,
/// value in the mode, what it does). One the kernel lacks is left out.
fn low_memory_mode(now: &Snapshot) -> Vec<(&'static str, i64, i64, &'static str)> {
    let syn_cut = |backlog: i64| (backlog - backlog / 4).max(SYN_BACKLOG_FLOOR).min(backlog);
    let mode = [
        (NO_METRICS_SAVE, now.no_metrics_save.map(|old| (old, 1)), "stop saving per-destination metrics"),
        (NO_SSTHRESH_METRICS_SAVE, now.no_ssthresh_metrics_save.map(|old| (old, 1)), "stop saving ssthresh metrics"),
        (HIGH_ORDER_ALLOC_DISABLE, now.high_order_alloc_disable.map(|old| (old, 1)), "use order-0 pages only"),
        (MAX_SYN_BACKLOG, now.max_syn_backlog.map(|old| (old, syn_cut(old))), "cut the SYN backlog by 25%"),
    ];
    mode.into_iter().filter_map(|(name, values, what)| values.map(|(old, new)| (name, old, new, what))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(level: MemoryLevel, pages: u64) -> MemoryPressure {
        MemoryPressure { netns: 1, protocol: wasmtune_sdk::Protocol::Tcp, level, pages, limits: (1000, 2000, 4000) }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            tcp_mem: Some([1000, 2000, 4000]),
            rmem: Some([4096, 131072, 6291456]),
            wmem: Some([4096, 16384, 4194304]),
            no_metrics_save: Some(0),
            no_ssthresh_metrics_save: Some(0),
            high_order_alloc_disable: Some(0),
            max_syn_backlog: Some(1024),
        }
    }

    #[test]
    fn pressure_raises_all_three_within_the_cap() {
        let mut state = MemoryState::default();
        let changes = state.decide(&event(MemoryLevel::Pressure, 2100), &snapshot(), 4, 4500);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].fields, vec![1250, 2500, 4500]);
        assert_eq!(changes[0].scenario, SCENARIO_PRESSURE);
        let at_cap = Snapshot { tcp_mem: Some([1000, 2000, 4500]), ..snapshot() };
        assert!(state.decide(&event(MemoryLevel::Pressure, 2100), &at_cap, 4, 4500).is_empty());
    }

    #[test]
    fn exhaustion_raises_the_high_limit_only() {
        let mut state = MemoryState::default();
        let changes = state.decide(&event(MemoryLevel::Exhausted, 4000), &snapshot(), 4, 1 << 20);
        assert_eq!(changes[0].fields, vec![1000, 2000, 5000]);
        assert_eq!(changes[0].scenario, SCENARIO_EXHAUSTED);
        assert!(!state.in_low_memory());
    }

    #[test]
    fn exhaustion_at_the_cap_enters_low_memory_mode_and_relief_reverts_it() {
        let mut state = MemoryState::default();
        let changes = state.decide(&event(MemoryLevel::Exhausted, 4000), &snapshot(), 4, 4000);
        let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [TCP_RMEM, TCP_WMEM, NO_METRICS_SAVE, NO_SSTHRESH_METRICS_SAVE, HIGH_ORDER_ALLOC_DISABLE, MAX_SYN_BACKLOG]
        );
        assert_eq!(changes[0].fields, vec![4096, 131072, 4718592]);
        assert_eq!(changes[5].fields, vec![768]);
        assert!(state.in_low_memory());
        // Still exhausted: buffers keep shrinking, the mode is not entered twice.
        let again = state.decide(&event(MemoryLevel::Exhausted, 4000), &snapshot(), 4, 4000);
        assert_eq!(again.len(), 2);
        let relieved = state.decide(&event(MemoryLevel::Relieved, 1500), &snapshot(), 4, 4000);
        let restored: Vec<(&str, i64)> = relieved.iter().map(|c| (c.name.as_str(), c.fields[0])).collect();
        assert_eq!(
            restored,
            [
                (NO_METRICS_SAVE, 0),
                (NO_SSTHRESH_METRICS_SAVE, 0),
                (HIGH_ORDER_ALLOC_DISABLE, 0),
                (MAX_SYN_BACKLOG, 1024)
            ]
        );
        assert!(relieved.iter().all(|c| c.scenario == SCENARIO_RELIEVED));
        // A restore refused for now is asked for again at the next relief.
        for change in relieved.iter().filter(|c| c.name != HIGH_ORDER_ALLOC_DISABLE) {
            state.restored(&change.name);
        }
        assert!(state.in_low_memory());
        let again = state.decide(&event(MemoryLevel::Relieved, 1500), &snapshot(), 4, 4000);
        assert_eq!(again.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), [HIGH_ORDER_ALLOC_DISABLE]);
        state.restored(HIGH_ORDER_ALLOC_DISABLE);
        assert!(!state.in_low_memory());
        assert!(state.decide(&event(MemoryLevel::Relieved, 1500), &snapshot(), 4, 4000).is_empty());
    }

    #[test]
    fn low_memory_mode_survives_encoding() {
        let mut state = MemoryState::default();
        assert_eq!(state.encode(), None);
        state.decide(&event(MemoryLevel::Exhausted, 4000), &snapshot(), 4, 4000);
        let text = state.encode().expect("in low-memory mode");
        assert_eq!(
            text,
            "net.ipv4.tcp_no_metrics_save=0;net.ipv4.tcp_no_ssthresh_metrics_save=0;net.core.high_order_alloc_disable=0;net.ipv4.tcp_max_syn_backlog=1024"
        );
        let mut back = MemoryState::decode(&text).expect("decodes");
        assert_eq!(back, state);
        assert_eq!(back.decide(&event(MemoryLevel::Relieved, 10), &snapshot(), 4, 4000).len(), 4);
        assert_eq!(MemoryState::decode("tcp_mem=x"), None);
    }

    #[test]
    fn only_tcp_mem_and_high_order_alloc_disable_are_global() {
        assert!(is_global(TCP_MEM) && is_global(HIGH_ORDER_ALLOC_DISABLE));
        for name in [TCP_RMEM, TCP_WMEM, NO_METRICS_SAVE, NO_SSTHRESH_METRICS_SAVE, MAX_SYN_BACKLOG] {
            assert!(!is_global(name), "{name}");
        }
    }

    #[test]
    fn the_syn_backlog_cut_stops_at_128() {
        let mut state = MemoryState::default();
        let small = Snapshot { max_syn_backlog: Some(150), ..snapshot() };
        let changes = state.decide(&event(MemoryLevel::Exhausted, 4000), &small, 4, 4000);
        assert_eq!(changes.last().map(|c| c.fields.clone()), Some(vec![128]));
    }

    #[test]
    fn pressure_raises_tcp_mem_with_nothing_else_readable() {
        let mut state = MemoryState::default();
        let only_tcp_mem = Snapshot { tcp_mem: Some([1000, 2000, 4000]), ..Snapshot::default() };
        let changes = state.decide(&event(MemoryLevel::Pressure, 2100), &only_tcp_mem, 4, 1 << 20);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].name.as_str(), changes[0].fields.clone()), (TCP_MEM, vec![1250, 2500, 5000]));
    }

    #[test]
    fn low_memory_mode_goes_ahead_without_high_order_alloc_disable() {
        // net.core.high_order_alloc_disable appeared in Linux 5.2.
        let mut state = MemoryState::default();
        let old_kernel = Snapshot { high_order_alloc_disable: None, ..snapshot() };
        let changes = state.decide(&event(MemoryLevel::Exhausted, 4000), &old_kernel, 4, 4000);
        let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [TCP_RMEM, TCP_WMEM, NO_METRICS_SAVE, NO_SSTHRESH_METRICS_SAVE, MAX_SYN_BACKLOG]);
        let relieved = state.decide(&event(MemoryLevel::Relieved, 1500), &old_kernel, 4, 4000);
        let restored: Vec<&str> = relieved.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(restored, [NO_METRICS_SAVE, NO_SSTHRESH_METRICS_SAVE, MAX_SYN_BACKLOG]);
    }

    #[test]
    fn exhaustion_with_tcp_mem_out_of_reach_uses_less_memory() {
        let mut state = MemoryState::default();
        let no_tcp_mem = Snapshot { tcp_mem: None, ..snapshot() };
        assert!(state.decide(&event(MemoryLevel::Pressure, 2100), &no_tcp_mem, 4, 1 << 20).is_empty());
        let changes = state.decide(&event(MemoryLevel::Exhausted, 4000), &no_tcp_mem, 4, 1 << 20);
        assert!(changes.iter().all(|c| c.name != TCP_MEM && c.scenario == SCENARIO_LOW_MEMORY), "{changes:?}");
        assert_eq!(changes.len(), 6, "{changes:?}");
        assert!(changes[0].reason.contains("which this policy cannot raise"), "{}", changes[0].reason);
        assert!(state.in_low_memory());
    }
}
