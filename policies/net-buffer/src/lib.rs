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
    BacklogDrops, Change, Config, Event, Info, Level, NetnsId, Policy, Reading, SoftnetSqueeze, Tunables,
};

use crate::tuner::{BUDGET, BUDGET_USECS, FLOW_LIMIT_BITMAP, MAX_BACKLOG, NetBuffer};

pub struct NetBufferPolicy {
    learning_rate: u8,
    tuners: BTreeMap<NetnsId, NetBuffer>,
    tunables: Tunables,
}

impl NetBufferPolicy {
    /// The initial namespace, where these global sysctls live whatever
    /// namespace a drop was seen in; `None` (said once) when the host does
    /// not tune it: then they are not this daemon's to change.
    fn target(&mut self, seen_in: NetnsId) -> Option<NetnsId> {
        let init = wasmtune_sdk::init_netns();
        if init.is_none() {
            let message = format!(
                "net-buffer signals seen (netns {seen_in}), but the initial namespace, where netdev_max_backlog and netdev_budget live, is not tuned; left alone"
            );
            self.tunables.say_once("no-init", Level::Warn, &message);
        }
        init
    }

    fn on_drops(&mut self, event: &BacklogDrops) {
        let Some(netns) = self.target(event.netns) else { return };
        // An administrator's backlog also stops the flow-limit changes that
        // come with raising it.
        let backlog = match self.tunables.reading_one(netns, MAX_BACKLOG) {
            Reading::Hold => return,
            reading => reading.ready(),
        };
        let bitmap = self.tunables.read_one(netns, FLOW_LIMIT_BITMAP);
        let now = self.tunables.now();
        let changes = self.tuners.entry(netns).or_default().on_drops(event, backlog, bitmap, self.learning_rate, now);
        self.request_all(netns, &changes);
    }

    fn on_squeeze(&mut self, event: &SoftnetSqueeze) {
        let Some(netns) = self.target(event.netns) else { return };
        // The guards judge both budgets together: an administrator's budget,
        // or a request for either still on its way, holds both.
        let mut budgets = [None; 2];
        for (value, name) in budgets.iter_mut().zip([BUDGET, BUDGET_USECS]) {
            match self.tunables.reading_one(netns, name) {
                Reading::Hold => return,
                reading => *value = reading.ready(),
            }
        }
        let [budget, usecs] = budgets;
        let now = self.tunables.now();
        let changes = self.tuners.entry(netns).or_default().on_squeeze(event, budget, usecs, self.learning_rate, now);
        self.request_all(netns, &changes);
    }

    /// Each change is asked for on its own: one refused (said once by
    /// `Tunables`) or owned by the administrator does not stop the others.
    fn request_all(&mut self, netns: NetnsId, changes: &[Change]) {
        for change in changes {
            let _ = self.tunables.request(netns, change);
        }
    }
}

impl Policy for NetBufferPolicy {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = NetBufferPolicy {
            learning_rate: config.learning_rate,
            tuners: BTreeMap::new(),
            tunables: Tunables::new(&[MAX_BACKLOG, FLOW_LIMIT_BITMAP, BUDGET, BUDGET_USECS]),
        };
        Ok((policy, Info::events(wasmtune_sdk::declared_events!())))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::BacklogDrops(drops) => self.on_drops(drops),
            Event::SoftnetSqueeze(squeeze) => self.on_squeeze(squeeze),
            // Overrides and namespaces; lost events need no catching up
            // (drops and squeezes are counted in the kernel, and the next
            // event carries those of the lost ones).
            other => self.tunables.observe(other),
        }
    }
}

wasmtune_sdk::export_policy!(NetBufferPolicy);
