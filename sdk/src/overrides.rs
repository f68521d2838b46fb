//! Tunables the administrator has taken over, per network namespace: once an
//! `admin-override` event names one, a policy stops asking to change it
//! there (the host would refuse anyway; asking again only adds log noise).

use std::collections::BTreeSet;

use crate::{AdminOverride, AdminRelease, NetnsId};

/// The (netns, sysctl) pairs the administrator owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    owned: BTreeSet<(NetnsId, String)>,
}

impl Overrides {
    /// No override known.
    pub fn new() -> Overrides {
        Overrides::default()
    }

    /// Records an override; true if it is news.
    pub fn record(&mut self, event: &AdminOverride) -> bool {
        self.owned.insert((event.netns, event.sysctl.clone()))
    }

    /// Records an override of one of `ours` and says once, in the policy's
    /// log, that the policy leaves it alone; `false` when it is not ours or
    /// already known. [`Tunables`](crate::Tunables) does this for you.
    pub fn take_over(&mut self, event: &AdminOverride, ours: impl Fn(&str) -> bool) -> bool {
        if !ours(&event.sysctl) || !self.record(event) {
            return false;
        }
        crate::log::info(&taken_over(event));
        true
    }

    /// The administrator handed `event.sysctl` back in `event.netns`
    /// (`wasmtune override clear`); true if it was recorded as theirs. Said
    /// once in the policy's log.
    pub fn release(&mut self, event: &AdminRelease) -> bool {
        let released = self.forget(event.netns, &event.sysctl);
        if released {
            crate::log::info(&handed_back(event));
        }
        released
    }

    /// Forgets one override without a word; true if it was recorded.
    pub fn forget(&mut self, netns: NetnsId, sysctl: &str) -> bool {
        self.owned.remove(&(netns, sysctl.to_string()))
    }

    /// Whether the administrator owns `sysctl` in `netns`.
    pub fn owns(&self, netns: NetnsId, sysctl: &str) -> bool {
        self.owned.contains(&(netns, sysctl.to_string()))
    }

    /// Forgets a namespace that went away.
    pub fn forget_netns(&mut self, netns: NetnsId) {
        self.owned.retain(|(owned_netns, _)| *owned_netns != netns);
    }
}

/// The line that says the policy leaves an overridden tunable alone.
pub(crate) fn taken_over(event: &AdminOverride) -> String {
    format!("{} ({}) changed {} in netns {}; leaving it alone there", event.comm, event.pid, event.sysctl, event.netns)
}

/// The line that says the policy tunes a handed-back tunable again.
pub(crate) fn handed_back(event: &AdminRelease) -> String {
    format!("the administrator handed {} in netns {} back; tuning it again", event.sysctl, event.netns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(netns: NetnsId, sysctl: &str) -> AdminOverride {
        AdminOverride { netns, sysctl: sysctl.into(), pid: 1, comm: "sysctl".into() }
    }

    #[test]
    fn overrides_are_per_netns_and_tunable() {
        let mut overrides = Overrides::new();
        assert!(overrides.record(&event(1, "net.core.netdev_max_backlog")));
        assert!(!overrides.record(&event(1, "net.core.netdev_max_backlog")));
        assert!(overrides.owns(1, "net.core.netdev_max_backlog"));
        assert!(!overrides.owns(2, "net.core.netdev_max_backlog"));
        assert!(!overrides.owns(1, "net.core.netdev_budget"));
        assert!(overrides.forget(1, "net.core.netdev_max_backlog"));
        assert!(!overrides.owns(1, "net.core.netdev_max_backlog"));
        assert!(overrides.record(&event(1, "net.core.netdev_max_backlog")));
        overrides.forget_netns(1);
        assert!(!overrides.owns(1, "net.core.netdev_max_backlog"));
    }
}
