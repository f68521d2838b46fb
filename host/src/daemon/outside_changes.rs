//! What the daemon does with an administrator's sysctl write and with a
//! namespace that came or went: one log line each, the actuator told (an
//! override), and an event routed like every other (see
//! [`crate::router::dispatch`]: subscriptions, tuned namespaces, per-policy
//! queues and their lost counts).

use std::sync::Arc;

use crate::actuate::Actuator;
use crate::admin_write::AdminWrite;
use crate::bpf::cgroup::{CgroupConfig, CgroupHooks};
use crate::grants::Arbiter;
use crate::netns::{NamespaceTransition, NetnsRegistry};
use crate::router::{PolicySet, dispatch};
use crate::wit::{AdminOverride, Event, NamespaceChange};

/// Handles administrator writes on the cgroup thread, by bpftune's rule: a
/// write by any other process to a tunable that a loaded policy may write,
/// in a namespace the host tunes, makes it the administrator's there,
/// whether or not the host has changed it yet. The override is kept (see
/// [`crate::overrides`]), logged with who wrote what and when, and reaches
/// the policies subscribed to `admin-override`. Writes to tunables no
/// policy may write are only logged at debug level: nothing of the host's
/// is at stake. Every write reported, whatever its tunable or namespace,
/// advances the kernel epoch first: policies may read tunables they may not
/// write, and the values they read are kept until the epoch changes.
pub fn admin_write_handler(
    actuator: Actuator,
    arbiter: Arc<Arbiter>,
    registry: Arc<NetnsRegistry>,
    policies: Arc<PolicySet>,
) -> impl FnMut(AdminWrite) + Send + 'static {
    move |write: AdminWrite| {
        actuator.note_outside_write();
        if write.netns == 0 {
            tracing::debug!(tunable = %write.tunable, pid = write.pid, comm = %write.comm, "a sysctl write whose namespace the kernel did not tell is ignored");
            return;
        }
        let netns = registry.display_name(write.netns);
        let found = write.value.clone().unwrap_or_else(|| "unknown".to_string());
        let writers = policies_that_may_write(&policies, &write.tunable);
        if writers.is_empty() || !registry.is_tuned(write.netns) {
            tracing::debug!(tunable = %write.tunable, %netns, pid = write.pid, comm = %write.comm, "sysctl written by another process");
            return;
        }
        let owner = arbiter.owner_of(write.netns, &write.tunable);
        let policy = owner.clone().unwrap_or_else(|| writers.join(","));
        if !actuator.mark_overridden(write.clone()) {
            tracing::debug!(tunable = %write.tunable, %netns, pid = write.pid, comm = %write.comm, found = %found, "the administrator wrote a tunable that is already theirs");
            return;
        }
        let history = match &owner {
            Some(owner) => format!("policy {owner} had changed it"),
            None => format!("no policy had changed it yet (may write it: {policy})"),
        };
        tracing::warn!(
            event = "admin-override",
            tunable = %write.tunable,
            netns = %netns,
            pid = write.pid,
            comm = %write.comm,
            found = %found,
            policy = %policy,
            time_ms = crate::ledger::record::now_ms(),
            "{} in netns {netns} was written by {} (pid {}) to ({found}); {}; it is the administrator's from now on \
             (hand it back with `wasmtune override clear {} --netns {netns}`)",
            write.tunable,
            write.comm,
            write.pid,
            history,
            write.tunable
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

/// The running policies whose grant lets them write `tunable`.
fn policies_that_may_write(policies: &PolicySet, tunable: &str) -> Vec<String> {
    policies.with_workers(|workers| {
        workers
            .iter()
            .filter(|w| w.grant.sysctls.get(tunable).is_some_and(|g| g.access == crate::manifest::Access::Write))
            .map(|w| w.name.clone())
            .collect()
    })
}

/// Logs namespace changes and routes `namespace-change` events to the
/// policies that subscribed, for the namespaces the host tunes.
pub fn namespace_change_handler(
    registry: Arc<NetnsRegistry>,
    policies: Arc<PolicySet>,
    actuator: Actuator,
) -> impl FnMut(&[NamespaceTransition]) + Send + 'static {
    move |changes: &[NamespaceTransition]| {
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
            if !change.created {
                actuator.forget_netns(change.cookie);
            }
            if !change.created && change.name != "init" {
                let dropped = actuator.overrides().forget_netns(&change.name);
                if dropped > 0 {
                    tracing::info!(netns = %change.name, "forgot {dropped} administrator override(s) of namespace {} that went away", change.name);
                }
            }
            events.push(Event::NamespaceChange(NamespaceChange {
                netns: change.cookie,
                name: change.name.clone(),
                created: change.created,
            }));
        }
        dispatch(&events, &registry, &policies);
    }
}

/// What [`start_cgroup_and_namespaces`] keeps running; dropping it detaches
/// the cgroup programs and stops following namespaces.
pub struct CgroupAndNamespaces {
    pub hooks: Option<CgroupHooks>,
    pub namespaces: Option<crate::netns::NetnsWatcher>,
}

impl CgroupAndNamespaces {
    /// Detaches the cgroup programs, then stops following namespaces.
    pub fn stop(self) {
        drop(self.hooks);
        drop(self.namespaces);
    }
}

/// Starts the cgroup programs and the namespace watcher for `wasmtune run`,
/// gives the actuator the per-destination map, and delivers the start-up
/// walk's events. Each part that cannot start is logged and left out; the
/// daemon runs without it.
pub fn start_cgroup_and_namespaces(
    actuator: &Actuator,
    arbiter: &Arc<Arbiter>,
    registry: &Arc<NetnsRegistry>,
    policies: &Arc<PolicySet>,
    near_limit_shift: u32,
) -> CgroupAndNamespaces {
    let (walk_tx, walk_rx) = crossbeam_channel::bounded(16);
    let handler = admin_write_handler(actuator.clone(), arbiter.clone(), registry.clone(), policies.clone());
    let config = CgroupConfig { near_limit_shift, ..CgroupConfig::default() };
    let hooks = match CgroupHooks::start(config, handler, walk_tx) {
        Ok(hooks) => {
            if let Some(map) = hooks.peer_map() {
                actuator.attach_peer_map(map);
            }
            actuator.set_outside_writes_seen(
                hooks.hooks().iter().any(|hook| hook.name == crate::bpf::cgroup::SYSCTL_HOOK && hook.failure.is_none()),
            );
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
        namespace_change_handler(registry.clone(), policies.clone(), actuator.clone()),
    ) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "network namespaces created after start-up are found only on demand");
            None
        }
    };
    CgroupAndNamespaces { hooks, namespaces }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::ActuatorConfig;

    #[test]
    fn every_outside_write_moves_the_kernel_epoch() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let registry = Arc::new(NetnsRegistry::discover(&[]).expect("registry"));
        let (actuator, thread) = Actuator::spawn(ActuatorConfig {
            dry_run: true,
            state_dir: dir.path().to_path_buf(),
            registry: registry.clone(),
            journal_max_bytes: crate::ledger::COMPACT_AT_BYTES,
        })
        .expect("actuator");
        actuator.set_outside_writes_seen(true);
        let mut handler = admin_write_handler(actuator.clone(), Arc::default(), registry, Arc::default());
        let settled = actuator.kernel_epoch();
        assert_eq!(actuator.kernel_epoch(), settled, "the epoch moves with nothing written");
        // No policy may write it, and the host does not tune the namespace
        // (or the kernel did not say which it was): a policy may still read it.
        for netns in [u64::MAX, 0] {
            let before = actuator.kernel_epoch();
            handler(AdminWrite {
                netns,
                tunable: "net.core.somaxconn".into(),
                pid: 1,
                comm: "sysctl".into(),
                value: Some("4096".into()),
            });
            assert_ne!(actuator.kernel_epoch(), before, "a write in netns {netns} left the epoch as it was");
        }
        actuator.shutdown();
        thread.join().expect("actuator thread");
    }
}
