//! SYN backlog decisions, free of any host. A listener whose SYN queue
//! overflows while it completes connections is busy: raise
//! `tcp_max_syn_backlog`. One that overflows with nothing completing is
//! being flooded: a bigger queue only holds more half-open junk, so cut it
//! back toward where it started and make sure SYN cookies are on. An
//! overflow with no listener named (port 0: the namespace counted drops but
//! no listener was full when the host looked) tells neither story and is
//! left alone.
//!
//! The two tunables are decided on separately: without a readable
//! `tcp_max_syn_backlog` a flood still turns SYN cookies on, and without a
//! readable `tcp_syncookies` the backlog is still grown or cut.

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
    /// What `event` calls for with `backlog` (`tcp_max_syn_backlog`) and
    /// `syncookies` in force, each `None` when unreadable.
    pub fn decide(
        &mut self,
        event: &SynOverflow,
        backlog: Option<i64>,
        syncookies: Option<i64>,
        rate: u8,
        now: InstantMs,
    ) -> Vec<Change> {
        let backlog = backlog.map(|backlog| backlog.max(0).unsigned_abs());
        if self.baseline.is_none() {
            self.baseline = backlog;
        }
        if event.local_port == 0 {
            return vec![];
        }
        if self.last.is_some_and(|at| now.saturating_sub(at) < INTERVAL_MS) {
            return vec![];
        }
        let changes: Vec<Change> = if event.established > 0 {
            backlog.and_then(|backlog| grow(event, backlog, rate)).into_iter().collect()
        } else {
            let cookies = syncookies.and_then(|syncookies| cookies_on(event, syncookies));
            let floor = self.baseline.unwrap_or(FLOOR).max(FLOOR);
            let cut = backlog.and_then(|backlog| cut_back(event, backlog, floor, rate));
            cookies.into_iter().chain(cut).collect()
        };
        if !changes.is_empty() {
            self.last = Some(now);
        }
        changes
    }
}

/// A busy listener: the backlog a step up, within the cap.
fn grow(event: &SynOverflow, backlog: u64, rate: u8) -> Option<Change> {
    let new = rate::raise(backlog, rate, CAP)?;
    let reason = format!(
        "the listener on port {} overflowed its SYN queue ({} of {}) while completing connections ({} established): real load; raising tcp_max_syn_backlog by {} to {new}",
        event.local_port,
        event.queued,
        event.max_queued,
        event.established,
        rate::step_percent(rate)
    );
    Some(Change::new(MAX_SYN_BACKLOG, vec![new as i64], SCENARIO_GROW, reason))
}

/// A flood: SYN cookies on, unless they are.
fn cookies_on(event: &SynOverflow, syncookies: i64) -> Option<Change> {
    if syncookies != 0 {
        return None;
    }
    let reason = format!(
        "the listener on port {} overflows its SYN queue with no connection completing: a SYN flood; turning SYN cookies on so that real clients still connect",
        event.local_port
    );
    Some(Change::new(SYNCOOKIES, vec![1], SCENARIO_FLOOD, reason))
}

/// A flood: the backlog a step back toward `floor`.
fn cut_back(event: &SynOverflow, backlog: u64, floor: u64, rate: u8) -> Option<Change> {
    let new = rate::lower(backlog, rate, floor)?;
    let reason = format!(
        "the listener on port {} overflows its SYN queue with no connection completing: a SYN flood, which a bigger queue only feeds; lowering tcp_max_syn_backlog to {new}",
        event.local_port
    );
    Some(Change::new(MAX_SYN_BACKLOG, vec![new as i64], SCENARIO_FLOOD, reason))
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
        let changes = state.decide(&overflow(20, false), Some(1024), Some(1), 4, 0);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (MAX_SYN_BACKLOG, 1280));
        assert!(state.decide(&overflow(20, false), Some(1024), Some(1), 4, 500).is_empty(), "not twice a second");
        assert_eq!(state.decide(&overflow(20, false), Some(1280), Some(1), 4, 1500)[0].fields, vec![1600]);
    }

    #[test]
    fn a_flood_turns_cookies_on_and_cuts_back_to_the_start() {
        let mut state = SynState::default();
        let _ = state.decide(&overflow(5, false), Some(1024), Some(0), 4, 0);
        let changes = state.decide(&overflow(0, false), Some(1280), Some(0), 4, 2000);
        let planned: Vec<(&str, i64)> = changes.iter().map(|c| (c.name.as_str(), c.fields[0])).collect();
        assert_eq!(planned, [(SYNCOOKIES, 1), (MAX_SYN_BACKLOG, 1024)]);
        assert!(changes.iter().all(|c| c.scenario == SCENARIO_FLOOD));
        // Cookies on, backlog back at its start: nothing more to do.
        assert!(state.decide(&overflow(0, true), Some(1024), Some(1), 4, 4000).is_empty());
    }

    #[test]
    fn an_overflow_without_a_listener_changes_nothing() {
        let mut state = SynState::default();
        let unnamed = SynOverflow { local_port: 0, queued: 0, max_queued: 0, ..overflow(0, false) };
        assert!(state.decide(&unnamed, Some(1024), Some(0), 4, 0).is_empty());
        // It did not start the one-second pause either.
        assert_eq!(state.decide(&overflow(3, false), Some(1024), Some(1), 4, 10).len(), 1);
    }

    #[test]
    fn the_backlog_is_capped() {
        let mut state = SynState::default();
        assert!(state.decide(&overflow(5, false), Some(CAP as i64), Some(1), 4, 0).is_empty());
    }

    #[test]
    fn a_flood_turns_cookies_on_without_a_readable_backlog() {
        let mut state = SynState::default();
        let changes = state.decide(&overflow(0, false), None, Some(0), 4, 0);
        let planned: Vec<(&str, i64)> = changes.iter().map(|c| (c.name.as_str(), c.fields[0])).collect();
        assert_eq!(planned, [(SYNCOOKIES, 1)]);
    }

    #[test]
    fn busy_listeners_grow_the_backlog_without_a_readable_syncookies() {
        let mut state = SynState::default();
        let changes = state.decide(&overflow(20, false), Some(1024), None, 4, 0);
        assert_eq!((changes[0].name.as_str(), changes[0].fields[0]), (MAX_SYN_BACKLOG, 1280));
        // A flood still cuts the backlog back to where it started.
        let changes = state.decide(&overflow(0, false), Some(1280), None, 4, 2000);
        let planned: Vec<(&str, i64)> = changes.iter().map(|c| (c.name.as_str(), c.fields[0])).collect();
        assert_eq!(planned, [(MAX_SYN_BACKLOG, 1024)]);
    }
}
