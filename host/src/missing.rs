//! Tunables a policy found missing: not on this kernel (an optional sysctl
//! such as `net.core.flow_limit_cpu_bitmap`, which needs
//! `CONFIG_NET_FLOW_LIMIT`), or not in that namespace. Only the decisions
//! that need one are lost; this says so once per policy, namespace and
//! tunable (`event="tunable-missing"`), and `wasmtune status` lists them.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::text::printable;

/// One tunable a policy could not read because it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTunable {
    pub policy: String,
    pub netns: String,
    pub tunable: String,
    /// What the policy does without it (its manifest's `purpose`).
    pub lost: String,
}

/// Longest `purpose` kept from a manifest (it comes from the policy file).
const MAX_PURPOSE: usize = 160;

#[derive(Debug, Default)]
pub struct MissingTunables {
    seen: Mutex<BTreeMap<(String, String, String), MissingTunable>>,
}

impl MissingTunables {
    /// Records that `policy` found `tunable` missing in `netns`; the first
    /// time, says so in one log line.
    pub fn note(&self, policy: &str, netns: &str, tunable: &str, purpose: Option<&str>) {
        let key = (policy.to_string(), netns.to_string(), tunable.to_string());
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains_key(&key) {
            return;
        }
        let lost = purpose.map_or_else(|| format!("what {policy} does with it"), |p| printable(p, MAX_PURPOSE));
        tracing::warn!(
            event = "tunable-missing",
            policy,
            tunable,
            netns,
            lost = %lost,
            "{tunable} does not exist in netns {netns} on this kernel: policy {policy} goes on without it \
             (lost: {lost}); its other decisions are unaffected"
        );
        seen.insert(
            key,
            MissingTunable { policy: policy.to_string(), netns: netns.to_string(), tunable: tunable.to_string(), lost },
        );
    }

    /// Every missing tunable seen, by policy, namespace and tunable.
    pub fn list(&self) -> Vec<MissingTunable> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Forgets a namespace that went away.
    pub fn forget_netns(&self, netns: &str) {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).retain(|(_, ns, _), _| ns != netns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_tunable_is_kept_once_per_policy_and_namespace() {
        let missing = MissingTunables::default();
        let bitmap = "net.core.flow_limit_cpu_bitmap";
        missing.note("net-buffer", "init", bitmap, Some("per-CPU flow limits"));
        missing.note("net-buffer", "init", bitmap, Some("per-CPU flow limits"));
        missing.note("net-buffer", "rx", bitmap, None);
        let list = missing.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].lost, "per-CPU flow limits");
        assert_eq!(list[1].lost, "what net-buffer does with it");
        missing.forget_netns("rx");
        assert_eq!(missing.list().len(), 1);
    }

    #[test]
    fn a_purpose_cannot_forge_log_lines() {
        let missing = MissingTunables::default();
        missing.note("p", "init", "net.core.x", Some("a\nfake line"));
        assert_eq!(missing.list()[0].lost, "a\\nfake line");
    }
}
