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

use wasmtune_sdk::{AddressFamily, Config, Event, Info, Level, NeighbourTable, NetnsId, Policy, Reading, Tunables};

use crate::tuner::{Decision, Lane};

pub struct Neigh {
    learning_rate: u8,
    lanes: BTreeMap<(NetnsId, AddressFamily), Lane>,
    tunables: Tunables,
}

impl Neigh {
    fn on_table(&mut self, event: &NeighbourTable) {
        // The thresholds belong to the kernel's one table per family, shared
        // by every namespace, and are sysctls of the initial one only.
        let table = &NeighbourTable { netns: wasmtune_sdk::init_netns().unwrap_or(event.netns), ..*event };
        let names = tuner::tunables(table.family);
        let mut current = [None; 3];
        for (value, name) in current.iter_mut().zip(names) {
            match self.tunables.reading_one(table.netns, name) {
                Reading::Ready(read) => *value = Some(read),
                Reading::Unavailable => {}
                // They are planned around each other's new values: one the
                // administrator owns, or one still on its way, holds all three.
                Reading::Hold => return,
            }
        }
        let lane = self.lanes.entry((table.netns, table.family)).or_default();
        match lane.decide(table, current, self.learning_rate) {
            Decision::Skip => {}
            Decision::CapReached { cap } => {
                let message = format!(
                    "{} in netns {} reached its cap of {cap} entries (the address space of the devices) and the table is still nearly full; not raising it further",
                    names[2], table.netns
                );
                self.tunables.say_once(&format!("{}/{:?}/cap", table.netns, table.family), Level::Warn, &message);
            }
            Decision::Change(changes) => {
                for change in changes {
                    // The ones after a refused change were planned around its
                    // new value: without it they could cross it.
                    if self.tunables.request(table.netns, &change).is_err() {
                        break;
                    }
                }
            }
        }
    }
}

impl Policy for Neigh {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy =
            Neigh { learning_rate: config.learning_rate, lanes: BTreeMap::new(), tunables: Tunables::new(&tuner::ALL) };
        Ok((policy, Info::events(wasmtune_sdk::declared_events!())))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::NeighbourTable(table) => self.on_table(table),
            // Overrides and namespaces; lost events need no catching up
            // (tables are reported again as entries are created).
            other => self.tunables.observe(other),
        }
    }
}

wasmtune_sdk::export_policy!(Neigh);
