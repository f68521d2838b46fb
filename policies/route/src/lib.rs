//! # route: raise the IPv6 route table maximum when the table nears it
//!
//! On a `route-table` event whose entry count is within one learning-rate
//! step of `net.ipv6.route.max_size` (per network namespace), the maximum is
//! raised by one step, up to the kernel's int maximum. The decision is the
//! pure [`tuner`] module; this file carries it out through the host.

pub mod tuner;

use wasmtune_sdk::{
    Config, Event, EventKind, Info, LogOnce, Overrides, Policy, RouteTable, Settle, log_denial, sysctl,
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
        let current = match sysctl::read_integers(table.netns, MAX_SIZE) {
            Ok(fields) if fields.len() == 1 => fields[0],
            Ok(_) => return,
            Err(denial) => return log_denial(&mut self.said, table.netns, MAX_SIZE, &denial),
        };
        let key = format!("{}", table.netns);
        let now = wasmtune_sdk::now();
        if self.settle.waiting(&key, &[current], now) {
            return;
        }
        match tuner::decide(table, current, self.learning_rate) {
            Decision::Skip => {}
            Decision::CapReached => {
                if self.said.first(&format!("{}/cap", table.netns)) {
                    wasmtune_sdk::info!(
                        "{MAX_SIZE} in netns {} is at its cap ({current}) and the table is still nearly full",
                        table.netns
                    );
                }
            }
            Decision::Raise(change) => match change.request(table.netns) {
                Ok(()) => self.settle.requested(&key, &change.fields, now),
                Err(denial) => log_denial(&mut self.said, table.netns, MAX_SIZE, &denial),
            },
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
