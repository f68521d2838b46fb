//! # net-buffer: per-CPU input backlog, flow limits and the NAPI budget
//!
//! - Backlog drops: when a minute's drops reach `netdev_max_backlog / 32`,
//!   `net.core.netdev_max_backlog` is raised by one learning-rate step (cap
//!   1 Mi packets) and the dropping CPU's bit is set in
//!   `net.core.flow_limit_cpu_bitmap`, so that the busiest flows are dropped
//!   first.
//! - Softnet squeezes: `net.core.netdev_budget` and
//!   `net.core.netdev_budget_usecs` are raised by a step (caps 16384 packets
//!   and 50 ms), at most once per 5 s; when the squeeze rate rises together
//!   with the budget (correlation above 0.75) both are lowered a step instead,
//!   never below their values when the policy started; and when the budget
//!   has doubled since squeezes began without the squeezes per packet
//!   halving, both go back to those values and stay for 10 minutes.
//!
//! Each decision needs only its own tunables, so a kernel without one loses
//! only what depends on it: without `flow_limit_cpu_bitmap`
//! (`CONFIG_NET_FLOW_LIMIT`) the backlog is still raised; without a readable
//! `netdev_max_backlog` drops are judged against the backlog the kernel
//! reported with them and the CPU still gets its flow limit; each of
//! `netdev_budget` and `netdev_budget_usecs` is raised and lowered on its
//! own, the guards judging by `netdev_budget` or, on a kernel without it,
//! by `netdev_budget_usecs`. The host logs once what is missing; a refused
//! read is logged here, once per kind.
//!
//! These sysctls exist only in the initial namespace. A backlog drop carries
//! the namespace of the receiving device (often a container's veth), so every
//! drop and squeeze is applied to the initial namespace once the host has
//! named it (`namespace-change` "init"); without it, nothing is changed. The
//! decisions are the pure [`tuner`] module.

pub mod tuner;

use std::collections::BTreeMap;

use wasmtune_sdk::{
    BacklogDrops, Change, Config, Event, EventKind, Info, LogOnce, NetnsId, Overrides, Policy, Settle, SoftnetSqueeze,
    Tunable, log_denial, sysctl,
};

use crate::tuner::{BUDGET, BUDGET_USECS, FLOW_LIMIT_BITMAP, MAX_BACKLOG, NetBuffer};

pub struct NetBufferPolicy {
    learning_rate: u8,
    /// The initial namespace, once the host has named it: where these
    /// global sysctls live, whatever namespace a drop was seen in.
    init_netns: Option<NetnsId>,
    tuners: BTreeMap<NetnsId, NetBuffer>,
    overrides: Overrides,
    settle: Settle,
    said: LogOnce,
}

impl NetBufferPolicy {
    /// The initial namespace, or `None` (said once) when the host does not
    /// tune it: then these global sysctls are not this daemon's to change.
    fn target(&mut self, seen_in: NetnsId) -> Option<NetnsId> {
        if self.init_netns.is_none() && self.said.first("no-init") {
            wasmtune_sdk::warn!(
                "net-buffer signals seen (netns {seen_in}), but the initial namespace, where netdev_max_backlog and netdev_budget live, is not tuned; left alone"
            );
        }
        self.init_netns
    }

    /// `name` in `netns`, or `None` when there is none to decide with: the
    /// decisions that need it are skipped, the others go on.
    fn read_integer(&mut self, netns: NetnsId, name: &str) -> Option<i64> {
        match sysctl::integer(netns, name) {
            Tunable::Present(value) => Some(value),
            Tunable::Missing(why) => {
                // The host has already said so (`tunable-missing`).
                if self.said.first(&format!("{netns}/{name}/missing")) {
                    wasmtune_sdk::debug!("{why}; the decisions that need {name} are skipped");
                }
                None
            }
            Tunable::Refused(denial) => {
                log_denial(&mut self.said, netns, name, &denial);
                None
            }
        }
    }

    /// Whether a request for `name` is still on its way, so that the value
    /// read (and this event) is about the old one.
    fn settling(&mut self, netns: NetnsId, name: &str, current: Option<i64>) -> bool {
        let now = wasmtune_sdk::now();
        current.is_some_and(|value| self.settle.waiting(&format!("{netns}/{name}"), &[value], now))
    }

    fn on_drops(&mut self, event: &BacklogDrops) {
        let Some(netns) = self.target(event.netns) else { return };
        // An administrator's backlog also stops the flow-limit changes that
        // come with raising it.
        if self.overrides.owns(netns, MAX_BACKLOG) {
            return;
        }
        let backlog = self.read_integer(netns, MAX_BACKLOG);
        let bitmap = self.read_integer(netns, FLOW_LIMIT_BITMAP);
        if self.settling(netns, MAX_BACKLOG, backlog) {
            return;
        }
        let now = wasmtune_sdk::now();
        let changes = self.tuners.entry(netns).or_default().on_drops(event, backlog, bitmap, self.learning_rate, now);
        self.request_all(netns, &changes);
    }

    fn on_squeeze(&mut self, event: &SoftnetSqueeze) {
        let Some(netns) = self.target(event.netns) else { return };
        // The guards judge both budgets together: an administrator's budget
        // stops this policy's changes to either.
        if [BUDGET, BUDGET_USECS].iter().any(|name| self.overrides.owns(netns, name)) {
            return;
        }
        let budget = self.read_integer(netns, BUDGET);
        let usecs = self.read_integer(netns, BUDGET_USECS);
        if self.settling(netns, BUDGET, budget) || self.settling(netns, BUDGET_USECS, usecs) {
            return;
        }
        let now = wasmtune_sdk::now();
        let changes = self.tuners.entry(netns).or_default().on_squeeze(event, budget, usecs, self.learning_rate, now);
        self.request_all(netns, &changes);
    }

    fn request_all(&mut self, netns: NetnsId, changes: &[Change]) {
        let now = wasmtune_sdk::now();
        for change in changes {
            if self.overrides.owns(netns, &change.name) {
                continue;
            }
            match change.request(netns) {
                Ok(()) => self.settle.requested(&format!("{netns}/{}", change.name), &change.fields, now),
                Err(denial) => log_denial(&mut self.said, netns, &change.name, &denial),
            }
        }
    }
}

impl Policy for NetBufferPolicy {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = NetBufferPolicy {
            learning_rate: config.learning_rate,
            init_netns: None,
            tuners: BTreeMap::new(),
            overrides: Overrides::new(),
            settle: Settle::new(),
            said: LogOnce::new(),
        };
        let events =
            [EventKind::BacklogDrops, EventKind::SoftnetSqueeze, EventKind::NamespaceChange, EventKind::AdminOverride];
        Ok((policy, Info::events(&events)))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::BacklogDrops(drops) => self.on_drops(drops),
            Event::SoftnetSqueeze(squeeze) => self.on_squeeze(squeeze),
            Event::NamespaceChange(change) => {
                if change.created && change.name == "init" {
                    self.init_netns = Some(change.netns);
                }
            }
            Event::AdminOverride(taken) => {
                self.overrides
                    .take_over(taken, |s| [MAX_BACKLOG, FLOW_LIMIT_BITMAP, BUDGET, BUDGET_USECS].contains(&s));
            }
            Event::AdminRelease(released) => {
                self.overrides.release(released);
            }
            // Drops and squeezes are counted in the kernel; the next event
            // carries those of the lost ones.
            Event::Lost(_) => {}
            Event::TcpBufferLimit(_)
            | Event::MemoryPressure(_)
            | Event::SynOverflow(_)
            | Event::ConnectionSummary(_)
            | Event::RetransmitBurst(_)
            | Event::NeighbourTable(_)
            | Event::RouteTable(_)
            | Event::FragmentMemory(_)
            | Event::UdpDrop(_) => {}
        }
    }
}

wasmtune_sdk::export_policy!(NetBufferPolicy);
