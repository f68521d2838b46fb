//! What the capabilities see of the world behind their checks: which
//! namespaces are tuned, the kernel's current values, the administrator's
//! tunables, the queue that accepted changes join, and the time rate limits
//! are counted in. In the daemon that is the live kernel ([`LiveKernel`]:
//! the actuator and the namespace registry); `wasmtune policy test` and
//! `wasmtune replay` put a simulated kernel behind the same checks
//! (`crate::simulate`), so a policy is judged there exactly as here.

use std::sync::Arc;
use std::time::Instant;

use crate::actuate::{ActuateError, Actuator, PeerEntryChange, SysctlChange};
use crate::netns::NetnsRegistry;
use crate::peer::PeerPrefix;
use crate::sysctl::Value;

pub trait KernelSide: Send + Sync {
    /// Whether the host tunes this namespace, from what it knows already.
    fn is_known_tuned(&self, netns: u64) -> bool;
    /// How a namespace is named in logs and answers.
    fn netns_name(&self, netns: u64) -> String;
    /// The current value of a sysctl in a namespace.
    fn read(&self, netns: u64, tunable: &str) -> Result<Value, ActuateError>;
    /// Whether the administrator owns this tunable in this namespace.
    fn is_overridden(&self, netns: u64, tunable: &str) -> bool;
    /// Queues a checked change, applied after the call returns; false when
    /// the queue is full.
    fn submit(&self, change: SysctlChange) -> bool;
    /// Whether per-destination settings can be applied.
    fn has_peer_map(&self) -> bool;
    /// Queues a checked per-destination change; false when the queue is full.
    fn submit_peer(&self, change: PeerEntryChange) -> bool;
    /// Congestion control algorithms this kernel offers.
    fn available_congestion(&self) -> Vec<String>;
    /// The time rate limits and change budgets are counted in.
    fn now(&self) -> Instant;
    /// Why a change in `netns` (of `peer`'s per-destination settings, or of
    /// a sysctl when `None`) is not this side's while a canary of its
    /// policy runs ([`crate::caps::canary`]); `None` when it is.
    fn scope_refusal(&self, _netns: u64, _peer: Option<&PeerPrefix>) -> Option<String> {
        None
    }
}

/// The running kernel, through the daemon's actuator and namespace registry.
pub struct LiveKernel {
    pub actuator: Actuator,
    pub registry: Arc<NetnsRegistry>,
}

impl KernelSide for LiveKernel {
    fn is_known_tuned(&self, netns: u64) -> bool {
        self.registry.is_known_tuned(netns)
    }

    fn netns_name(&self, netns: u64) -> String {
        self.registry.display_name(netns)
    }

    fn read(&self, netns: u64, tunable: &str) -> Result<Value, ActuateError> {
        self.actuator.read(netns, tunable)
    }

    fn is_overridden(&self, netns: u64, tunable: &str) -> bool {
        self.actuator.is_overridden(netns, tunable)
    }

    fn submit(&self, change: SysctlChange) -> bool {
        self.actuator.submit(change)
    }

    fn has_peer_map(&self) -> bool {
        self.actuator.has_peer_map()
    }

    fn submit_peer(&self, change: PeerEntryChange) -> bool {
        self.actuator.submit_peer(change)
    }

    fn available_congestion(&self) -> Vec<String> {
        crate::caps::tcp::available_congestion()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
