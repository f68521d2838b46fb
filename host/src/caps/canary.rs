//! The kernel side of either version of a policy name while a canary of it
//! may run: [`ScopedKernel`] passes everything to the live kernel, except
//! that a change outside the side's share of the scope is refused
//! (`not-granted`, saying whose it is), and the canary's changes are
//! journaled and logged under the canary's own label, so that they can be
//! undone alone. With no canary of the name, the current version's side
//! changes nothing.

use std::sync::Arc;
use std::time::Instant;

use crate::actuate::{ActuateError, PeerEntryChange, SysctlChange};
use crate::canary::scope::{CanaryScopes, Side};
use crate::caps::kernel::KernelSide;
use crate::peer::PeerPrefix;
use crate::sysctl::Value;

pub struct ScopedKernel {
    pub inner: Arc<dyn KernelSide>,
    pub policy: String,
    pub side: Side,
    pub scopes: Arc<CanaryScopes>,
}

impl ScopedKernel {
    fn label(&self, policy: String) -> String {
        match self.side {
            Side::Current => policy,
            Side::Canary => crate::canary::journal_label(&policy),
        }
    }
}

impl KernelSide for ScopedKernel {
    fn is_known_tuned(&self, netns: u64) -> bool {
        self.inner.is_known_tuned(netns)
    }

    fn netns_name(&self, netns: u64) -> String {
        self.inner.netns_name(netns)
    }

    fn read(&self, netns: u64, tunable: &str) -> Result<Value, ActuateError> {
        self.inner.read(netns, tunable)
    }

    fn is_overridden(&self, netns: u64, tunable: &str) -> bool {
        self.inner.is_overridden(netns, tunable)
    }

    fn submit(&self, mut change: SysctlChange) -> bool {
        change.policy = self.label(change.policy);
        self.inner.submit(change)
    }

    fn has_peer_map(&self) -> bool {
        self.inner.has_peer_map()
    }

    fn submit_peer(&self, mut change: PeerEntryChange) -> bool {
        change.policy = self.label(change.policy);
        self.inner.submit_peer(change)
    }

    fn available_congestion(&self) -> Vec<String> {
        self.inner.available_congestion()
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn scope_refusal(&self, netns: u64, peer: Option<&PeerPrefix>) -> Option<String> {
        match self.scopes.get(&self.policy) {
            Some(scope) => scope.refusal(self.side, &self.inner.netns_name(netns), peer),
            // A canary that ended (reverted, aborted) while its thread still
            // handles a batch acts nowhere; the current version everywhere.
            None if self.side == Side::Canary => Some("the canary has ended".to_string()),
            None => None,
        }
    }
}
