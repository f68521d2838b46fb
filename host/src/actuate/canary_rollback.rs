//! Undoing a canary: what its label last changed goes back to what was
//! there before it, as the current version's change, journaled first and
//! logged like any other. A value someone changed since is left alone
//! (the actuator's usual check against the value last written).

use crate::actuate::{PeerEntryChange, SysctlChange, Worker};
use crate::canary::journal_label;

/// What undoing a canary did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CanaryRollback {
    /// `tunable in netns: from -> to`, one per sysctl put back.
    pub sysctls: Vec<String>,
    /// Per-destination entries given back to the entry they replaced.
    pub peers_restored: Vec<String>,
    /// Per-destination entries removed (they replaced none).
    pub peers_removed: Vec<String>,
}

impl CanaryRollback {
    /// One sentence for the log and the control socket.
    pub fn describe(&self) -> String {
        format!(
            "{} sysctl(s) put back, {} per-destination entr(y/ies) given back to the version before, {} removed",
            self.sysctls.len(),
            self.peers_restored.len(),
            self.peers_removed.len()
        )
    }
}

impl Worker {
    pub(super) fn roll_back_canary(&mut self, policy: &str, why: &str) -> CanaryRollback {
        let label = journal_label(policy);
        let mut report = CanaryRollback::default();
        let changed: Vec<_> = self
            .ledger
            .state()
            .changed()
            .into_iter()
            .filter(|(_, history)| history.last_policy == label)
            .map(|(key, history)| (key.clone(), history.clone()))
            .collect();
        for (key, history) in changed {
            let Some(last) = history.last_written.clone() else { continue };
            let to = history.before_run.clone().unwrap_or_else(|| history.original.clone());
            let change = SysctlChange {
                policy: policy.to_string(),
                netns: history.netns_cookie,
                tunable: key.tunable.clone(),
                value: to.clone(),
                // Only where the kernel still holds what the canary wrote.
                checked_against: Some(last.clone()),
                scenario: "canary undone".to_string(),
                reason: format!("{why}; putting back the value from before the canary"),
            };
            self.apply(&change);
            let now = self.ledger.state().get(&key.netns, &key.tunable).and_then(|h| h.last_written.clone());
            if now.as_ref() == Some(&to) {
                report.sysctls.push(format!("{} in netns {}: {last} -> {to}", key.tunable, key.netns));
            }
        }
        let entries: Vec<_> =
            self.peer_entries.iter().filter(|(_, owner)| **owner == label).map(|(key, _)| *key).collect();
        for key in entries {
            let (netns, prefix) = key;
            let restore = self.displaced.get(&key).cloned();
            let (owner, settings) = match &restore {
                Some((owner, settings)) => (owner.clone(), Some(settings.clone())),
                None => (label.clone(), None),
            };
            self.apply_peer(&PeerEntryChange {
                policy: owner,
                netns,
                prefix,
                settings,
                scenario: "canary undone".to_string(),
                reason: format!("{why}; giving {prefix} back what it had before the canary"),
            });
            let described = format!("{prefix} in netns {}", self.netns_name(netns));
            match (restore.is_some(), self.peer_entries.get(&key) != Some(&label)) {
                (_, false) => {}
                (true, true) => report.peers_restored.push(described),
                (false, true) => report.peers_removed.push(described),
            }
        }
        report
    }
}
