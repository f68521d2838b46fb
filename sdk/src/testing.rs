//! A host for native unit tests (feature `testing`): no root, kernel, BPF
//! or Wasm. It holds sysctl values per namespace (and tunables this "kernel"
//! lacks), the grant's bounds, a clock the test moves and a state store,
//! and records every request with what became of it, and every log line.
//! It checks what the real host checks first (granted, in bounds, the
//! namespace known, the tunable present, the arity), then refuses what the
//! test says the host's last checks refuse ([`FakeHost::refuse`]: the
//! administrator's override, the rate limit) and, like the real host,
//! applies accepted changes only when the call is over: [`FakeHost::apply`].
//!
//! ```
//! use wasmtune_sdk::testing::FakeHost;
//! use wasmtune_sdk::{Change, Host};
//!
//! let mut host = FakeHost::new()
//!     .sysctl(1, "net.ipv4.tcp_rmem", &[4096, 131072, 6291456])
//!     .grant("net.ipv4.tcp_rmem", 4096, 16 << 20);
//! let change = Change::new("net.ipv4.tcp_rmem", vec![4096, 131072, 7864320], "grow", "full".into());
//! assert!(host.request(1, &change).is_ok());
//! host.apply();
//! assert_eq!(host.value(1, "net.ipv4.tcp_rmem"), Some(&[4096, 131072, 7864320][..]));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::{Bounds, Change, Denial, Host, InstantMs, Level, NetnsId, SysctlValue};

/// One request the policy made, and the answer it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// The namespace it was made for.
    pub netns: NetnsId,
    /// What was asked.
    pub change: Change,
    /// The answer: accepted, or why not.
    pub outcome: Result<(), Denial>,
}

/// The fake host; see the [module](self) documentation.
#[derive(Debug, Clone, Default)]
pub struct FakeHost {
    sysctls: BTreeMap<(NetnsId, String), Vec<i64>>,
    missing: BTreeSet<String>,
    grants: BTreeMap<String, Bounds>,
    refusals: BTreeMap<String, Denial>,
    queued: Vec<(NetnsId, String, Vec<i64>)>,
    requests: Vec<Requested>,
    logs: Vec<(Level, String)>,
    clock: InstantMs,
    state: BTreeMap<String, Vec<u8>>,
}

impl FakeHost {
    /// A host with no sysctl, no grant, the clock at 0 and an empty store.
    pub fn new() -> FakeHost {
        FakeHost::default()
    }

    /// With `name` holding `values` in namespace `netns`.
    pub fn sysctl(mut self, netns: NetnsId, name: &str, values: &[i64]) -> FakeHost {
        self.set_sysctl(netns, name, values);
        self
    }

    /// With `name` absent from this kernel: reads and requests are refused
    /// as `unsupported`, as on a kernel without it.
    pub fn missing(mut self, name: &str) -> FakeHost {
        self.missing.insert(name.to_string());
        self
    }

    /// With `name` granted for writing between `min` and `max` (the bounds
    /// the manifest, the administrator and the host leave). A request for a
    /// tunable not granted is refused as `not-granted`.
    pub fn grant(mut self, name: &str, min: i64, max: i64) -> FakeHost {
        self.grants.insert(name.to_string(), Bounds { min, max });
        self
    }

    /// With every request for `name` that passes the other checks refused
    /// with `denial`, in every namespace: what the host's last checks answer
    /// when the administrator has taken the tunable over (`admin-override`)
    /// or it was changed too recently (`rate-limited`).
    pub fn refuse(mut self, name: &str, denial: Denial) -> FakeHost {
        self.set_refusal(name, Some(denial));
        self
    }

    /// Refuses requests for `name` with `denial` from now on, as
    /// [`FakeHost::refuse`], or (`None`) no longer.
    pub fn set_refusal(&mut self, name: &str, denial: Option<Denial>) {
        match denial {
            Some(denial) => self.refusals.insert(name.to_string(), denial),
            None => self.refusals.remove(name),
        };
    }

    /// Sets a value as another process would (the administrator, the kernel).
    pub fn set_sysctl(&mut self, netns: NetnsId, name: &str, values: &[i64]) {
        self.sysctls.insert((netns, name.to_string()), values.to_vec());
    }

    /// The value `name` holds in `netns` now.
    pub fn value(&self, netns: NetnsId, name: &str) -> Option<&[i64]> {
        self.sysctls.get(&(netns, name.to_string())).map(Vec::as_slice)
    }

    /// Applies the changes accepted so far, in order: what the host does
    /// when the policy's call returns.
    pub fn apply(&mut self) {
        for (netns, name, values) in self.queued.drain(..) {
            self.sysctls.insert((netns, name), values);
        }
    }

    /// Moves the clock on by `ms` milliseconds.
    pub fn advance(&mut self, ms: u64) {
        self.clock = self.clock.saturating_add(ms);
    }

    /// Every request, in order, with its answer.
    pub fn requests(&self) -> &[Requested] {
        &self.requests
    }

    /// The requests that were accepted.
    pub fn accepted(&self) -> impl Iterator<Item = &Requested> {
        self.requests.iter().filter(|r| r.outcome.is_ok())
    }

    /// The refusals, in order.
    pub fn denials(&self) -> impl Iterator<Item = &Denial> {
        self.requests.iter().filter_map(|r| r.outcome.as_ref().err())
    }

    /// Every log line, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// Forgets the requests and log lines recorded so far (values stay).
    pub fn clear_records(&mut self) {
        self.requests.clear();
        self.logs.clear();
    }

    /// What the state store holds under `key`.
    pub fn stored(&self, key: &str) -> Option<&[u8]> {
        self.state.get(key).map(Vec::as_slice)
    }

    fn check(&self, netns: NetnsId, change: &Change) -> Result<(), Denial> {
        let name = &change.name;
        if self.missing.contains(name) {
            return Err(Denial::Unsupported(format!("{name} does not exist on this kernel")));
        }
        let Some(bounds) = self.grants.get(name) else {
            return Err(Denial::NotGranted(format!("{name} is not granted")));
        };
        let Some(current) = self.sysctls.get(&(netns, name.clone())) else {
            return Err(Denial::UnknownNetns(netns));
        };
        if current.len() != change.fields.len() {
            return Err(Denial::InvalidValue(format!(
                "{name} has {} fields, not {}",
                current.len(),
                change.fields.len()
            )));
        }
        let moved_out =
            current.iter().zip(&change.fields).any(|(old, new)| old != new && (*new < bounds.min || *new > bounds.max));
        if moved_out {
            return Err(Denial::OutOfBounds(*bounds));
        }
        match self.refusals.get(name) {
            Some(denial) => Err(denial.clone()),
            None => Ok(()),
        }
    }
}

impl Host for FakeHost {
    fn read(&mut self, netns: NetnsId, name: &str) -> Result<SysctlValue, Denial> {
        if self.missing.contains(name) {
            return Err(Denial::Unsupported(format!("{name} does not exist on this kernel")));
        }
        self.sysctls
            .get(&(netns, name.to_string()))
            .cloned()
            .map(SysctlValue::Integers)
            .ok_or(Denial::UnknownNetns(netns))
    }

    fn request(&mut self, netns: NetnsId, change: &Change) -> Result<(), Denial> {
        let outcome = self.check(netns, change);
        if outcome.is_ok() {
            self.queued.push((netns, change.name.clone(), change.fields.clone()));
        }
        self.requests.push(Requested { netns, change: change.clone(), outcome: outcome.clone() });
        outcome
    }

    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }

    fn now(&mut self) -> InstantMs {
        self.clock
    }

    fn state_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.state.get(key).cloned()
    }

    fn state_set(&mut self, key: &str, value: &[u8]) -> Result<(), Denial> {
        let used: usize = self.state.iter().filter(|(k, _)| *k != key).map(|(k, v)| k.len() + v.len()).sum();
        if used + key.len() + value.len() > crate::state::QUOTA_BYTES {
            return Err(Denial::QuotaExceeded(crate::state::QUOTA_BYTES as u32));
        }
        self.state.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn state_delete(&mut self, key: &str) {
        self.state.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RMEM: &str = "net.ipv4.tcp_rmem";

    fn change(fields: Vec<i64>) -> Change {
        Change::new(RMEM, fields, "test", "because".into())
    }

    #[test]
    fn requests_are_checked_recorded_and_applied_only_when_asked() {
        let mut host = FakeHost::new().sysctl(1, RMEM, &[4096, 131072, 6291456]).grant(RMEM, 4096, 8 << 20);
        assert!(host.request(1, &change(vec![4096, 131072, 7864320])).is_ok());
        assert_eq!(host.value(1, RMEM), Some(&[4096, 131072, 6291456][..]), "applied before the call ended");
        host.apply();
        assert_eq!(host.value(1, RMEM), Some(&[4096, 131072, 7864320][..]));

        assert!(matches!(host.request(1, &change(vec![4096, 131072, 1 << 30])), Err(Denial::OutOfBounds(_))));
        assert!(matches!(host.request(2, &change(vec![4096, 131072, 1 << 20])), Err(Denial::UnknownNetns(2))));
        assert!(matches!(host.request(1, &change(vec![1, 2])), Err(Denial::InvalidValue(_))));
        let other = Change::new("net.core.rmem_max", vec![1], "test", "because".into());
        assert!(matches!(host.request(1, &other), Err(Denial::NotGranted(_))));
        assert_eq!(host.accepted().count(), 1);
        assert_eq!(host.denials().count(), 4);
    }

    #[test]
    fn a_refusal_comes_after_the_other_checks_and_can_be_lifted() {
        let overridden = Denial::AdminOverride("written by pid 42".into());
        let mut host = FakeHost::new()
            .sysctl(1, RMEM, &[4096, 131072, 6291456])
            .grant(RMEM, 4096, 8 << 20)
            .refuse(RMEM, overridden.clone());
        assert!(matches!(host.request(1, &change(vec![4096, 131072, 1 << 30])), Err(Denial::OutOfBounds(_))));
        assert_eq!(host.request(1, &change(vec![4096, 131072, 7864320])), Err(overridden));
        host.set_refusal(RMEM, Some(Denial::RateLimited(40)));
        assert_eq!(host.request(1, &change(vec![4096, 131072, 7864320])), Err(Denial::RateLimited(40)));
        host.apply();
        assert_eq!(host.value(1, RMEM), Some(&[4096, 131072, 6291456][..]), "nothing refused is applied");
        host.set_refusal(RMEM, None);
        assert!(host.request(1, &change(vec![4096, 131072, 7864320])).is_ok());
        assert_eq!(host.requests().len(), 4);
        assert_eq!(host.denials().count(), 3);
    }

    #[test]
    fn a_missing_tunable_is_unsupported_and_the_clock_and_store_work() {
        let mut host = FakeHost::new().missing(RMEM);
        assert!(matches!(host.read(1, RMEM), Err(Denial::Unsupported(_))));
        host.advance(250);
        assert_eq!(host.now(), 250);
        assert!(host.state_set("k", b"v").is_ok());
        assert_eq!(host.stored("k"), Some(&b"v"[..]));
        let big = vec![0u8; crate::state::QUOTA_BYTES];
        assert!(matches!(host.state_set("big", &big), Err(Denial::QuotaExceeded(_))));
        host.log(Level::Info, "said");
        assert_eq!(host.logs().len(), 1);
    }
}
