//! # neigh: neighbour (ARP/NDP) table gc thresholds
//!
//! When a neighbour table's entries come within one learning-rate step of
//! `gc_thresh3`, `gc_thresh3`, `gc_thresh2` and `gc_thresh1` of the family's
//! default table (`net.ipv4.neigh.default.*`, `net.ipv6.neigh.default.*`)
//! are each raised by a step. `gc_thresh3` never exceeds the address space
//! the host reports for the device (Σ max(2^hostbits, 256) × 4, at most
//! 16 Mi); reaching it is logged once. When a table holds a quarter of
//! `gc_thresh3` or less, the thresholds are lowered a step, never below
//! 128/512/1024 nor below their values when first seen.
//!
//! Each threshold is read on its own: one this kernel does not have (the
//! host says so once) or the host refuses stops only its own change; the
//! others still move, each kept at or below the next one up that is known
//! (the table's own limit when `gc_thresh3` is not). A threshold the
//! administrator changed stops all three of its family (they are planned
//! around each other's new values) until it is handed back.
//!
//! Per-table (per-device) thresholds would need netlink, which the policy
//! contract does not offer: the default table's sysctls are changed. The
//! kernel has one table per family shared by every namespace, and its
//! sysctls exist only in the initial namespace, so changes go there. The decision is the pure
//! [`tuner`] module.

pub mod tuner;

use std::collections::BTreeMap;

use wasmtune_sdk::{
    AddressFamily, Config, Event, EventKind, Info, LogOnce, NeighbourTable, NetnsId, Overrides, Policy, Settle,
    Tunable, log_denial, sysctl,
};

use crate::tuner::{Decision, Lane};

pub struct Neigh {
    learning_rate: u8,
    /// The initial namespace, once the host has named it: the thresholds
    /// belong to the kernel's one table per family, shared by every
    /// namespace, and are sysctls there only.
    init_netns: Option<NetnsId>,
    lanes: BTreeMap<(NetnsId, AddressFamily), Lane>,
    overrides: Overrides,
    settle: Settle,
    said: LogOnce,
}

impl Neigh {
    fn on_table(&mut self, event: &NeighbourTable) {
        let table = &NeighbourTable { netns: self.init_netns.unwrap_or(event.netns), ..*event };
        let names = tuner::tunables(table.family);
        if names.iter().any(|name| self.overrides.owns(table.netns, name)) {
            return;
        }
        let current = names.map(|name| self.read_integer(table.netns, name));
        let now = wasmtune_sdk::now();
        for (name, value) in names.iter().zip(current) {
            let key = format!("{}/{name}", table.netns);
            if value.is_some_and(|value| self.settle.waiting(&key, &[value], now)) {
                return;
            }
        }
        let lane = self.lanes.entry((table.netns, table.family)).or_default();
        match lane.decide(table, current, self.learning_rate) {
            Decision::Skip => {}
            Decision::CapReached { cap } => {
                if self.said.first(&format!("{}/{:?}/cap", table.netns, table.family)) {
                    wasmtune_sdk::warn!(
                        "{} in netns {} reached its cap of {cap} entries (the address space of the devices) and the table is still nearly full; not raising it further",
                        names[2],
                        table.netns
                    );
                }
            }
            Decision::Change(changes) => {
                for change in changes {
                    match change.request(table.netns) {
                        Ok(()) => {
                            self.settle.requested(&format!("{}/{}", table.netns, change.name), &change.fields, now)
                        }
                        Err(denial) => {
                            log_denial(&mut self.said, table.netns, &change.name, &denial);
                            // The ones after it were planned around its new
                            // value: without it they could cross it.
                            break;
                        }
                    }
                }
            }
        }
    }

    /// `name` in `netns`, or `None` when there is none to decide with.
    fn read_integer(&mut self, netns: NetnsId, name: &str) -> Option<i64> {
        match sysctl::integer(netns, name) {
            Tunable::Present(value) => Some(value),
            Tunable::Missing(why) => {
                // The host has already said so (`tunable-missing`).
                if self.said.first(&format!("{netns}/{name}/missing")) {
                    wasmtune_sdk::debug!("{why}; the other gc thresholds are still tuned");
                }
                None
            }
            Tunable::Refused(denial) => {
                log_denial(&mut self.said, netns, name, &denial);
                None
            }
        }
    }
}

impl Policy for Neigh {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = Neigh {
            learning_rate: config.learning_rate,
            init_netns: None,
            lanes: BTreeMap::new(),
            overrides: Overrides::new(),
            settle: Settle::new(),
            said: LogOnce::new(),
        };
        Ok((policy, Info::events(&[EventKind::NeighbourTable, EventKind::NamespaceChange, EventKind::AdminOverride])))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::NeighbourTable(table) => self.on_table(table),
            Event::NamespaceChange(change) => {
                if change.created && change.name == "init" {
                    self.init_netns = Some(change.netns);
                }
            }
            Event::AdminOverride(taken) => {
                self.overrides.take_over(taken, |s| s.contains(".neigh.default.gc_thresh"));
            }
            Event::AdminRelease(released) => {
                self.overrides.release(released);
            }
            // Tables are reported again as entries are created.
            Event::Lost(_) => {}
            Event::TcpBufferLimit(_)
            | Event::MemoryPressure(_)
            | Event::SynOverflow(_)
            | Event::ConnectionSummary(_)
            | Event::RetransmitBurst(_)
            | Event::BacklogDrops(_)
            | Event::SoftnetSqueeze(_)
            | Event::RouteTable(_)
            | Event::FragmentMemory(_)
            | Event::UdpDrop(_) => {}
        }
    }
}

wasmtune_sdk::export_policy!(Neigh);
