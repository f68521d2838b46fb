//! What the daemon does with an administrator's sysctl write and with a
//! namespace that came or went: one log line each, the actuator told (an
//! override), and an event for the policies that subscribed to it.

use std::sync::Arc;

use crate::actuate::Actuator;
use crate::bpf::cgroup::AdminWrite;
use crate::grants::Arbiter;
use crate::netns::{NamespaceChange, NetnsRegistry};
use crate::router::PolicySet;
use crate::wit::{AdminOverride, Event, EventKind, NamespaceChange as NamespaceEvent};

/// Handles administrator writes on the cgroup thread. A write to a tunable
/// a policy owns in that namespace marks it overridden (the host never
/// changes it there again), is logged with who did it, and reaches the
/// policies subscribed to `admin-override`. Writes to tunables no policy
/// owns are only logged at debug level: nothing of the host's is at stake.
pub fn admin_write_handler(
    actuator: Actuator,
    arbiter: Arc<Arbiter>,
    registry: Arc<NetnsRegistry>,
    policies: Arc<PolicySet>,
) -> impl FnMut(AdminWrite) + Send + 'static {
    move |write: AdminWrite| {
        let netns = registry.name_of(write.netns).unwrap_or_else(|| format!("netns:{}", write.netns));
        let found = write.value.clone().unwrap_or_else(|| "unknown".to_string());
        let Some(owner) = arbiter.owner_of(write.netns, &write.tunable) else {
            tracing::debug!(tunable = %write.tunable, %netns, pid = write.pid, comm = %write.comm, "sysctl written by another process");
            return;
        };
        actuator.mark_overridden(write.clone());
        tracing::warn!(
            event = "admin-override",
            tunable = %write.tunable,
            netns = %netns,
            pid = write.pid,
            comm = %write.comm,
            found = %found,
            policy = %owner,
            "{} in netns {netns} was written by {} (pid {}) to ({found}); policy {owner} owned it, wasmtune leaves it alone from now on",
            write.tunable,
            write.comm,
            write.pid
        );
        let event = Event::AdminOverride(AdminOverride {
            netns: write.netns,
            sysctl: write.tunable,
            pid: write.pid,
            comm: write.comm,
        });
        deliver(&policies, EventKind::AdminOverride, event);
    }
}

/// Logs namespace changes and hands `namespace-change` events to the
/// policies that subscribed, for the namespaces the host tunes (a namespace
/// that went away is no longer known to the router, so it is delivered here).
pub fn namespace_change_handler(policies: Arc<PolicySet>) -> impl FnMut(&[NamespaceChange]) + Send + 'static {
    move |changes: &[NamespaceChange]| {
        for change in changes.iter().filter(|c| c.tuned) {
            let what = if change.created { "appeared" } else { "went away" };
            tracing::info!(
                event = "namespace-change",
                netns = %change.name,
                cookie = change.cookie,
                created = change.created,
                "network namespace {} {what}",
                change.name
            );
            let event = Event::NamespaceChange(NamespaceEvent {
                netns: change.cookie,
                name: change.name.clone(),
                created: change.created,
            });
            deliver(&policies, EventKind::NamespaceChange, event);
        }
    }
}

fn deliver(policies: &PolicySet, kind: EventKind, event: Event) {
    for worker in policies.snapshot() {
        if worker.wants(kind) {
            worker.deliver(vec![event.clone()]);
        }
    }
}

/// What [`start_for_daemon`] keeps running; dropping it detaches the cgroup
/// programs and stops following namespaces.
pub struct DaemonCgroup {
    pub hooks: Option<super::CgroupHooks>,
    pub namespaces: Option<crate::netns::NetnsWatcher>,
}

/// Starts the cgroup programs and the namespace watcher for `wasmtune run`,
/// gives the actuator the per-destination map, and delivers the start-up
/// walk's events. Each part that cannot start is logged and left out; the
/// daemon runs without it.
pub fn start_for_daemon(
    actuator: &Actuator,
    arbiter: &Arc<Arbiter>,
    registry: &Arc<NetnsRegistry>,
    policies: &Arc<PolicySet>,
    near_shift: u32,
) -> DaemonCgroup {
    let (walk_tx, walk_rx) = crossbeam_channel::bounded(16);
    let handler = admin_write_handler(actuator.clone(), arbiter.clone(), registry.clone(), policies.clone());
    let config = super::CgroupConfig { near_shift, ..super::CgroupConfig::default() };
    let hooks = match super::CgroupHooks::start(config, handler, walk_tx) {
        Ok(hooks) => {
            if let Some(map) = hooks.peer_map() {
                actuator.attach_peer_map(map);
            }
            Some(hooks)
        }
        Err(error) => {
            tracing::warn!(%error, "per-destination settings, administrator-write detection and the socket walk are off");
            None
        }
    };
    let workers = policies.snapshot();
    for batch in walk_rx.try_iter() {
        for (worker, events) in workers.iter().zip(crate::router::route(&batch, registry, &workers)) {
            if !events.is_empty() {
                worker.deliver(events);
            }
        }
    }
    let namespaces = match crate::netns::NetnsWatcher::spawn(
        registry.clone(),
        std::time::Duration::from_secs(2),
        namespace_change_handler(policies.clone()),
    ) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "network namespaces created after start-up are found only on demand");
            None
        }
    };
    DaemonCgroup { hooks, namespaces }
}
