//! What the daemon does with an administrator's sysctl write and with a
//! namespace that came or went: one log line each, the actuator told (an
//! override), and an event routed like every other (see
//! [`crate::router::dispatch`]: subscriptions, tuned namespaces, per-policy
//! queues and their lost counts).

use std::sync::Arc;

use crate::actuate::Actuator;
use crate::bpf::cgroup::AdminWrite;
use crate::grants::Arbiter;
use crate::netns::{NamespaceChange, NetnsRegistry};
use crate::router::{PolicySet, dispatch};
use crate::wit::{AdminOverride, Event, NamespaceChange as NamespaceEvent};

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
        dispatch(&[event], &registry, &policies);
    }
}

/// Logs namespace changes and routes `namespace-change` events to the
/// policies that subscribed, for the namespaces the host tunes.
pub fn namespace_change_handler(
    registry: Arc<NetnsRegistry>,
    policies: Arc<PolicySet>,
) -> impl FnMut(&[NamespaceChange]) + Send + 'static {
    move |changes: &[NamespaceChange]| {
        let mut events = Vec::new();
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
            events.push(Event::NamespaceChange(NamespaceEvent {
                netns: change.cookie,
                name: change.name.clone(),
                created: change.created,
            }));
        }
        dispatch(&events, &registry, &policies);
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
    for batch in walk_rx.try_iter() {
        dispatch(&batch, registry, policies);
    }
    let namespaces = match crate::netns::NetnsWatcher::spawn(
        registry.clone(),
        std::time::Duration::from_secs(2),
        namespace_change_handler(registry.clone(), policies.clone()),
    ) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "network namespaces created after start-up are found only on demand");
            None
        }
    };
    DaemonCgroup { hooks, namespaces }
}
