//! A kernel in memory, behind the capabilities' real checks: sysctl values
//! per namespace (what a file or the command line gives; anything else does
//! not exist), the administrator's tunables as `admin-override` events mark
//! them, per-destination settings, and a clock the input moves. Accepted
//! changes wait in a queue and are applied after the call returns, in
//! order, as the daemon's actuator applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::actuate::{ActuateError, PeerEntryChange, SysctlChange};
use crate::caps::kernel::KernelSide;
use crate::peer::{PeerPrefix, PeerSettings};
use crate::recording::NamespaceTable;
use crate::sysctl::{SysctlError, Value};

/// What the simulated kernel offers when the input names no
/// `net.ipv4.tcp_available_congestion_control`.
pub const DEFAULT_CONGESTION: [&str; 3] = ["reno", "cubic", "bbr"];
const AVAILABLE_CONGESTION: &str = "net.ipv4.tcp_available_congestion_control";

/// A change the queue held, once applied (or not).
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Sysctl {
        change: SysctlChange,
        old: Option<Value>,
    },
    /// The kernel no longer held the value the change was checked against.
    Superseded {
        change: SysctlChange,
        found: Option<Value>,
    },
    Peer(PeerEntryChange),
}

enum Queued {
    Sysctl(SysctlChange),
    Peer(PeerEntryChange),
}

pub struct SimulatedKernel {
    namespaces: Mutex<NamespaceTable>,
    /// Namespaces that went away (a `namespace-change` with `created: false`).
    gone: Mutex<BTreeSet<u64>>,
    values: Mutex<BTreeMap<(u64, String), Value>>,
    /// Tunables a policy changed: the input's later values for them no
    /// longer apply (the policy's own value stands).
    changed: Mutex<BTreeSet<(u64, String)>>,
    overridden: Mutex<BTreeSet<(u64, String)>>,
    peers: Mutex<BTreeMap<(u64, PeerPrefix), PeerSettings>>,
    queue: Mutex<Vec<Queued>>,
    now_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl SimulatedKernel {
    pub fn new(namespaces: NamespaceTable) -> SimulatedKernel {
        SimulatedKernel {
            namespaces: Mutex::new(namespaces),
            gone: Mutex::default(),
            values: Mutex::default(),
            changed: Mutex::default(),
            overridden: Mutex::default(),
            peers: Mutex::default(),
            queue: Mutex::default(),
            now_ms: Arc::default(),
            epoch: Instant::now(),
        }
    }

    /// The clock, shared with the policy's `clock` import.
    pub fn clock(&self) -> Arc<AtomicU64> {
        self.now_ms.clone()
    }

    pub fn set_time(&self, at_ms: u64) {
        self.now_ms.store(at_ms, Ordering::Release);
    }

    /// A value the input gives (`None`: the tunable does not exist). A
    /// tunable a policy changed keeps the policy's value.
    pub fn observe(&self, netns: u64, name: &str, value: Option<Value>) {
        let key = (netns, name.to_string());
        if lock(&self.changed).contains(&key) {
            return;
        }
        let mut values = lock(&self.values);
        match value {
            Some(value) => values.insert(key, value),
            None => values.remove(&key),
        };
    }

    pub fn namespace_came(&self, netns: u64) {
        lock(&self.gone).remove(&netns);
    }

    pub fn namespace_went(&self, netns: u64) {
        lock(&self.gone).insert(netns);
    }

    pub fn set_overridden(&self, netns: u64, name: &str, overridden: bool) {
        let key = (netns, name.to_string());
        let mut set = lock(&self.overridden);
        if overridden {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Applies what the last call queued, in order.
    pub fn apply_queued(&self) -> Vec<Applied> {
        let queued = std::mem::take(&mut *lock(&self.queue));
        queued
            .into_iter()
            .map(|item| match item {
                Queued::Sysctl(change) => self.apply(change),
                Queued::Peer(change) => {
                    let key = (change.netns, change.prefix);
                    match &change.settings {
                        Some(settings) => lock(&self.peers).insert(key, settings.clone()),
                        None => lock(&self.peers).remove(&key),
                    };
                    Applied::Peer(change)
                }
            })
            .collect()
    }

    fn apply(&self, change: SysctlChange) -> Applied {
        let key = (change.netns, change.tunable.clone());
        let mut values = lock(&self.values);
        let old = values.get(&key).cloned();
        if change.checked_against.is_some() && change.checked_against != old {
            return Applied::Superseded { change, found: old };
        }
        values.insert(key.clone(), change.value.clone());
        lock(&self.changed).insert(key);
        Applied::Sysctl { change, old }
    }

    /// Every value the kernel holds, by namespace name and tunable.
    pub fn values(&self) -> Vec<(String, String, Value)> {
        let namespaces = lock(&self.namespaces);
        lock(&self.values)
            .iter()
            .map(|((netns, name), value)| (namespaces.display_name(*netns), name.clone(), value.clone()))
            .collect()
    }

    /// Whether a policy changed this tunable.
    pub fn was_changed(&self, netns: u64, name: &str) -> bool {
        lock(&self.changed).contains(&(netns, name.to_string()))
    }

    /// Per-destination settings in force, by namespace name and prefix.
    pub fn peers(&self) -> Vec<(String, PeerPrefix, PeerSettings)> {
        let namespaces = lock(&self.namespaces);
        lock(&self.peers)
            .iter()
            .map(|((netns, prefix), settings)| (namespaces.display_name(*netns), *prefix, settings.clone()))
            .collect()
    }

    pub fn netns_cookie(&self, name: &str) -> u64 {
        lock(&self.namespaces).cookie_of(name)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KernelSide for SimulatedKernel {
    fn is_known_tuned(&self, netns: u64) -> bool {
        lock(&self.namespaces).contains(netns) && !lock(&self.gone).contains(&netns)
    }

    fn netns_name(&self, netns: u64) -> String {
        lock(&self.namespaces).display_name(netns)
    }

    fn read(&self, netns: u64, tunable: &str) -> Result<Value, ActuateError> {
        lock(&self.values).get(&(netns, tunable.to_string())).cloned().ok_or_else(|| ActuateError::Sysctl {
            source: SysctlError::DoesNotExist { name: tunable.to_string(), errno: Errno::ENOENT },
        })
    }

    fn is_overridden(&self, netns: u64, tunable: &str) -> bool {
        lock(&self.overridden).contains(&(netns, tunable.to_string()))
    }

    fn submit(&self, change: SysctlChange) -> bool {
        lock(&self.queue).push(Queued::Sysctl(change));
        true
    }

    fn has_peer_map(&self) -> bool {
        true
    }

    fn submit_peer(&self, change: PeerEntryChange) -> bool {
        lock(&self.queue).push(Queued::Peer(change));
        true
    }

    fn available_congestion(&self) -> Vec<String> {
        let values = lock(&self.values);
        let init = crate::recording::INIT_COOKIE;
        match values.get(&(init, AVAILABLE_CONGESTION.to_string())) {
            Some(Value::Text(list)) => list.split_whitespace().map(str::to_string).collect(),
            _ => DEFAULT_CONGESTION.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn now(&self) -> Instant {
        self.epoch + Duration::from_millis(self.now_ms.load(Ordering::Acquire))
    }
}
