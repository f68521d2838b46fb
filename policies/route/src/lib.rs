//! # route: raise the IPv6 route table maximum when the table nears it
//!
//! On a `route-table` event whose entry count is within one learning-rate
//! step of `net.ipv6.route.max_size` (per network namespace), the maximum is
//! raised by one step, up to the kernel's int maximum. The decision is the
//! pure [`tuner`] module; this file carries it out through the host.
//!
//! `max_size` is the only tunable: where it does not exist (the host says
//! so once) or cannot be read, that namespace is left alone, quietly for a
//! missing one; the other namespaces are still tuned.

pub mod tuner;

use wasmtune_sdk::{
    Config, Event, EventKind, Info, LogOnce, NetnsId, Overrides, Policy, RouteTable, Settle, Tunable, log_denial,
    sysctl,
};

use crate::tuner::{Decision, MAX_SIZE};

pub struct Route {
    learning_rate: u8,
    overrides: Overrides,
    settle: Settle,
    said: LogOnce,
}

impl Route {
    fn on_table(&mut self, table: &RouteTable) {
        if self.overrides.owns(table.netns, MAX_SIZE) {
            return;
        }
        let current = self.read_max_size(table.netns);
        let key = format!("{}", table.netns);
        let now = wasmtune_sdk::now();
        if current.is_some_and(|value| self.settle.waiting(&key, &[value], now)) {
            return;
        }
        match tuner::decide(table, current, self.learning_rate) {
            Decision::Skip => {}
            Decision::CapReached => {
                if self.said.first(&format!("{}/cap", table.netns)) {
                    wasmtune_sdk::info!(
                        "{MAX_SIZE} in netns {} is at its cap ({}) and the table is still nearly full",
                        table.netns,
                        table.max_size
                    );
                }
            }
            Decision::Raise(change) => match change.request(table.netns) {
                Ok(()) => self.settle.requested(&key, &change.fields, now),
                Err(denial) => log_denial(&mut self.said, table.netns, MAX_SIZE, &denial),
            },
        }
    }

    /// `max_size` in `netns`, or `None` when there is none to decide with.
    fn read_max_size(&mut self, netns: NetnsId) -> Option<i64> {
        match sysctl::integer(netns, MAX_SIZE) {
            Tunable::Present(value) => Some(value),
            Tunable::Missing(why) => {
                // The host has already said so (`tunable-missing`).
                if self.said.first(&format!("{netns}/missing")) {
                    wasmtune_sdk::debug!("{why}; the IPv6 route table is not tuned there");
                }
                None
            }
            Tunable::Refused(denial) => {
                log_denial(&mut self.said, netns, MAX_SIZE, &denial);
                None
            }
        }
    }
}

impl Policy for Route {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = Route {
            learning_rate: config.learning_rate,
            overrides: Overrides::new(),
            settle: Settle::new(),
            said: LogOnce::new(),
        };
        Ok((policy, Info::events(&[EventKind::RouteTable, EventKind::AdminOverride])))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::RouteTable(table) => self.on_table(table),
            Event::AdminOverride(taken) => {
                self.overrides.take_over(taken, |s| s == MAX_SIZE);
            }
            Event::AdminRelease(released) => {
                self.overrides.release(released);
            }
            // The kernel reports the table again while it stays nearly full.
            Event::Lost(_) => {}
            Event::TcpBufferLimit(_)
            | Event::MemoryPressure(_)
            | Event::SynOverflow(_)
            | Event::ConnectionSummary(_)
            | Event::RetransmitBurst(_)
            | Event::BacklogDrops(_)
            | Event::SoftnetSqueeze(_)
            | Event::NeighbourTable(_)
            | Event::FragmentMemory(_)
            | Event::UdpDrop(_)
            | Event::NamespaceChange(_) => {}
        }
    }
}

wasmtune_sdk::export_policy!(Route);
