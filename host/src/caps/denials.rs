//! How often a refusal is logged. A policy that keeps asking for what it may
//! not have must not flood the host's log, and must not grow the host's
//! memory either: each (subject, kind) is said at most once per interval,
//! and the subjects remembered are bounded, so that a policy inventing a new
//! name for every request still gets only a few lines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::grants;
use crate::wit::Denial;

/// How often the same denial (subject, kind) is logged.
pub const DENIAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Subjects remembered per policy; beyond them every subject shares one slot.
const MAX_SUBJECTS: usize = 64;
/// The shared slot's subject.
const MANY: &str = "(many)";

#[derive(Debug, Default)]
pub struct DenialLog {
    last: HashMap<(String, &'static str), Instant>,
    /// Denials not logged since the last line of the same kind.
    unsaid: HashMap<&'static str, u64>,
    /// `shadow-denied` for a shadow version's refusals; else `denied`.
    event: Option<&'static str>,
}

impl DenialLog {
    /// The log of a shadow version: its lines are `shadow-denied`.
    pub fn for_shadow() -> DenialLog {
        DenialLog { event: Some("shadow-denied"), ..DenialLog::default() }
    }

    /// Whether a denial of `kind` about `subject` should be logged now; if
    /// so, also how many were left unsaid before it.
    pub fn admit(&mut self, subject: &str, kind: &'static str, now: Instant) -> Option<u64> {
        if self.last.len() >= MAX_SUBJECTS {
            self.last.retain(|_, at| now.duration_since(*at) < DENIAL_LOG_INTERVAL);
        }
        let subject = if self.last.len() >= MAX_SUBJECTS && !self.last.contains_key(&(subject.to_string(), kind)) {
            MANY
        } else {
            subject
        };
        let key = (subject.to_string(), kind);
        if self.last.get(&key).is_some_and(|at| now.duration_since(*at) < DENIAL_LOG_INTERVAL) {
            *self.unsaid.entry(kind).or_default() += 1;
            return None;
        }
        self.last.insert(key, now);
        Some(self.unsaid.remove(kind).unwrap_or(0))
    }

    /// The `denied` line of a refused sysctl or per-destination request,
    /// when [`DenialLog::admit`] lets `subject` be said now. `tunable` and
    /// `netns` (what the line shows) are worked out only then: a flood of
    /// refusals costs a map lookup each, not a formatted line.
    pub fn say(
        &mut self,
        policy: &str,
        subject: &str,
        denial: &Denial,
        tunable: impl FnOnce() -> String,
        netns: impl FnOnce() -> String,
    ) {
        let kind = grants::denial_kind(denial);
        let Some(unsaid) = self.admit(subject, kind, Instant::now()) else { return };
        let detail = grants::denial_detail(denial);
        let tunable = tunable();
        tracing::warn!(
            event = self.event.unwrap_or("denied"),
            policy = %policy,
            tunable = %tunable,
            netns = %netns(),
            denial = kind,
            detail = %detail,
            unsaid,
            "denied policy {policy} a change of {tunable}: {detail}{}",
            if unsaid > 0 { format!(" ({unsaid} more denial(s) of this kind not logged)") } else { String::new() }
        );
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_denial_is_said_once_per_interval() {
        let mut log = DenialLog::default();
        let now = Instant::now();
        assert_eq!(log.admit("net.core.somaxconn", "not-granted", now), Some(0));
        assert_eq!(log.admit("net.core.somaxconn", "not-granted", now), None);
        assert_eq!(log.admit("net.core.somaxconn", "out-of-bounds", now), Some(0));
        assert_eq!(log.admit("net.core.somaxconn", "not-granted", now + DENIAL_LOG_INTERVAL), Some(1));
    }

    #[test]
    fn unique_names_neither_flood_the_log_nor_grow_memory() {
        let mut log = DenialLog::default();
        let now = Instant::now();
        let said = (0..100_000).filter(|i| log.admit(&format!("net.fake.name{i}"), "not-granted", now).is_some());
        assert!(said.count() <= MAX_SUBJECTS + 1);
        assert!(log.remembered() <= MAX_SUBJECTS + 1, "{}", log.remembered());
    }
}
