//! A sysctl change decided by a policy's pure decision code and carried out
//! later through the host: decision modules return [`Change`]s, so they can
//! be unit-tested natively without any host at all.

use crate::{Denial, Level, NetnsId, log, sysctl};

/// One integer sysctl change, with the scenario and reason the host logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The sysctl, dotted (`net.ipv4.tcp_rmem`).
    pub name: String,
    /// Its new value, every field of it.
    pub fields: Vec<i64>,
    /// Short scenario name ("need to increase backlog size").
    pub scenario: String,
    /// The sentence an administrator reads next to the change.
    pub reason: String,
}

impl Change {
    /// A change of `name` to `fields`, with the scenario and reason logged.
    pub fn new(name: &str, fields: Vec<i64>, scenario: &str, reason: String) -> Change {
        Change { name: name.to_string(), fields, scenario: scenario.to_string(), reason }
    }

    /// Asks the host to make this change in `netns`.
    pub fn request(&self, netns: NetnsId) -> Result<(), Denial> {
        sysctl::request_integers(netns, &self.name, &self.fields, &self.scenario, &self.reason)
    }
}

/// Remembers which messages were already logged, so that each problem is
/// said once per key (e.g. per namespace and denial kind).
#[derive(Debug, Clone, Default)]
pub struct LogOnce {
    said: std::collections::BTreeSet<String>,
}

impl LogOnce {
    /// Nothing said yet.
    pub fn new() -> LogOnce {
        LogOnce::default()
    }

    /// True the first time `key` is seen.
    pub fn first(&mut self, key: &str) -> bool {
        self.said.insert(key.to_string())
    }

    /// Forgets `key`, so that it is said again next time.
    pub fn forget(&mut self, key: &str) {
        self.said.remove(key);
    }
}

/// The level a denial deserves: routine refusals (rate limit, a namespace
/// that went away, a tunable this kernel lacks, which the host itself
/// reports once as `tunable-missing`) are debug, the administrator's
/// override is news, the rest are warnings.
pub fn denial_level(denial: &Denial) -> Level {
    match denial {
        Denial::RateLimited(_) | Denial::UnknownNetns(_) | Denial::Unsupported(_) => Level::Debug,
        Denial::AdminOverride(_) => Level::Info,
        _ => Level::Warn,
    }
}

/// Logs that `what` in `netns` was not changed, once per namespace, tunable
/// and denial kind.
pub fn log_denial(once: &mut LogOnce, netns: NetnsId, what: &str, denial: &Denial) {
    if once.first(&format!("{netns}/{what}/{}", denial.kind())) {
        log::log(denial_level(denial), &format!("{what} in netns {netns} not changed: {}", denial.explain()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_first_once_until_forgotten() {
        let mut once = LogOnce::new();
        assert!(once.first("a"));
        assert!(!once.first("a"));
        assert!(once.first("b"));
        once.forget("a");
        assert!(once.first("a"));
    }

    #[test]
    fn routine_denials_are_quiet() {
        assert_eq!(denial_level(&Denial::RateLimited(5)), Level::Debug);
        assert_eq!(denial_level(&Denial::Unsupported("x".into())), Level::Debug);
        assert_eq!(denial_level(&Denial::AdminOverride("x".into())), Level::Info);
        assert_eq!(denial_level(&Denial::NotGranted("x".into())), Level::Warn);
    }

    #[test]
    fn changes_carry_their_explanation() {
        let change = Change::new("net.core.netdev_budget", vec![375], "squeeze", "why".into());
        assert_eq!(change.name, "net.core.netdev_budget");
        assert_eq!(change.scenario, "squeeze");
    }
}
