//! SYN backlog decisions, free of any host. A listener whose SYN queue
//! overflows while it completes connections is busy: raise
//! `tcp_max_syn_backlog`. One that overflows with nothing completing is
//! being flooded: a bigger queue only holds more half-open junk, so cut it
//! back toward where it started and make sure SYN cookies are on. An
//! overflow with no listener named (port 0: the namespace counted drops but
//! no listener was full when the host looked) tells neither story and is
//! left alone.

use wasmtune_sdk::{Change, InstantMs, SynOverflow, rate};

pub const MAX_SYN_BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog";
pub const SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";
pub const CAP: u64 = 65536;
pub const FLOOR: u64 = 128;
/// Decisions per namespace are at least this far apart.
pub const INTERVAL_MS: InstantMs = 1000;

pub const SCENARIO_GROW: &str = "need to increase SYN backlog";
pub const SCENARIO_FLOOD: &str = "SYN flood";

#[derive(Debug, Clone, Default)]
pub struct SynState {
    last: Option<InstantMs>,
    /// The backlog when first seen: a flood never cuts below it.
    baseline: Option<u64>,
}

impl SynState {
    pub fn decide(
        &mut self,
        event: &SynOverflow,
        backlog: i64,
        syncookies: i64,
        rate: u8,
        now: InstantMs,
    ) -> Vec<Change> {
        let backlog = backlog.max(0).unsigned_abs();
        let baseline = *self.baseline.get_or_insert(backlog);
        if event.local_port == 0 {
            return vec![];
        }
        if self.last.is_some_and(|at| now.saturating_sub(at) < INTERVAL_MS) {
            return vec![];
        }
        let mut changes = vec![];
        if event.established > 0 {
            if let Some(new) = rate::raise(backlog, rate, CAP) {
                let reason = format!(
                    "the listener on port {} overflowed its SYN queue ({} of {}) while completing connections ({} established): real load; raising tcp_max_syn_backlog by {} to {new}",
                    event.local_port,
                    event.queued,
                    event.max_queued,
                    event.established,
                    rate::step_percent(rate)
                );
                changes.push(Change::new(MAX_SYN_BACKLOG, vec![new as i64], SCENARIO_GROW, reason));
            }
        } else {
            if syncookies == 0 {
                let reason = format!(
                    "the listener on port {} overflows its SYN queue with no connection completing: a SYN flood; turning SYN cookies on so that real clients still connect",
                    event.local_port
                );
                changes.push(Change::new(SYNCOOKIES, vec![1], SCENARIO_FLOOD, reason));
            }
            if let Some(new) = rate::lower(backlog, rate, baseline.max(FLOOR)) {
                let reason = format!(
                    "the listener on port {} overflows its SYN queue with no connection completing: a SYN flood, which a bigger queue only feeds; lowering tcp_max_syn_backlog to {new}",
                    event.local_port
                );
                changes.push(Change::new(MAX_SYN_BACKLOG, vec![new as i64], SCENARIO_FLOOD, reason));
            }
        }
        if !changes.is_empty() {
            self.last = Some(now);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overflow(established: u32, cookie_sent: bool) -> SynOverflow {
        SynOverflow { netns: 1, local_port: 80, queued: 128, max_queued: 128, cookie_sent, established }
    }

    #[test]
    fn busy_listeners_get_a_bigger_backlog() {
        let mut state = SynState::default();
        let changes = state.decide(&overflow(20, false), 1024, 1, 4, 0);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (MAX_SYN_BACKLOG, 1280));
        assert!(state.decide(&overflow(20, false), 1024, 1, 4, 500).is_empty(), "not twice a second");
        assert_eq!(state.decide(&overflow(20, false), 1280, 1, 4, 1500)[0].fields, vec![1600]);
    }

    #[test]
    fn a_flood_turns_cookies_on_and_cuts_back_to_the_start() {
        let mut state = SynState::default();
        let _ = state.decide(&overflow(5, false), 1024, 0, 4, 0);
        let changes = state.decide(&overflow(0, false), 1280, 0, 4, 2000);
        let planned: Vec<(&str, i64)> = changes.iter().map(|c| (c.name.as_str(), c.fields[0])).collect();
        assert_eq!(planned, [(SYNCOOKIES, 1), (MAX_SYN_BACKLOG, 1024)]);
        assert!(changes.iter().all(|c| c.scenario == SCENARIO_FLOOD));
        // Cookies on, backlog back at its start: nothing more to do.
        assert!(state.decide(&overflow(0, true), 1024, 1, 4, 4000).is_empty());
    }

    #[test]
    fn an_overflow_without_a_listener_changes_nothing() {
        let mut state = SynState::default();
        let unnamed = SynOverflow { local_port: 0, queued: 0, max_queued: 0, ..overflow(0, false) };
        assert!(state.decide(&unnamed, 1024, 0, 4, 0).is_empty());
        // It did not start the one-second pause either.
        assert_eq!(state.decide(&overflow(3, false), 1024, 1, 4, 10).len(), 1);
    }

    #[test]
    fn the_backlog_is_capped() {
        let mut state = SynState::default();
        assert!(state.decide(&overflow(5, false), CAP as i64, 1, 4, 0).is_empty());
    }
}
