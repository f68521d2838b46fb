//! # udp-buffer: UDP receive buffers and UDP memory
//!
//! - A datagram dropped because a socket's receive queue was full raises
//!   `net.core.rmem_default` by one learning-rate step, or
//!   `net.core.rmem_max` when the socket fixed its size with SO_RCVBUF and is
//!   held at that maximum; both stop at 256 MiB.
//! - A datagram refused by UDP memory accounting, or UDP memory pressure,
//!   raises all three `net.ipv4.udp_mem` values by a step, the highest no
//!   more than a quarter of RAM.
//!
//! All three sysctls exist only in the initial namespace, so changes go
//! there whichever namespace the socket lives in. The decisions are the pure
//! [`tuner`] module.

pub mod tuner;

use wasmtune_sdk::{
    Config, Event, EventKind, Info, LogOnce, MemoryLevel, MemoryPressure, NetnsId, Overrides, Policy, Protocol, Settle,
    UdpDrop, UdpDropCause, log_denial, sysctl, system,
};

use crate::tuner::{Decision, RMEM_DEFAULT, RMEM_MAX, UDP_MEM};

pub struct UdpBuffer {
    learning_rate: u8,
    /// The initial namespace, once the host has named it.
    init_netns: Option<NetnsId>,
    overrides: Overrides,
    settle: Settle,
    said: LogOnce,
}

impl UdpBuffer {
    fn target(&self, netns: NetnsId) -> NetnsId {
        self.init_netns.unwrap_or(netns)
    }

    fn read(&mut self, netns: NetnsId, name: &str) -> Option<Vec<i64>> {
        match sysctl::read_integers(netns, name) {
            Ok(fields) => Some(fields),
            Err(denial) => {
                log_denial(&mut self.said, netns, name, &denial);
                None
            }
        }
    }

    fn on_drop(&mut self, drop: &UdpDrop) {
        let netns = self.target(drop.netns);
        match drop.cause {
            UdpDropCause::ReceiveQueueFull => {
                let Some(default) = self.read(netns, RMEM_DEFAULT) else { return };
                let Some(max) = self.read(netns, RMEM_MAX) else { return };
                let (Some(&default), Some(&max)) = (default.first(), max.first()) else { return };
                let decision = tuner::on_queue_full(drop, default, max, self.learning_rate);
                self.carry_out(netns, decision, &[(RMEM_DEFAULT, vec![default]), (RMEM_MAX, vec![max])]);
            }
            UdpDropCause::MemoryLimit => {
                let why = format!("UDP memory accounting refused {} datagrams on port {}", drop.drops, drop.local_port);
                self.raise_memory(netns, &why);
            }
        }
    }

    fn on_pressure(&mut self, pressure: &MemoryPressure) {
        if pressure.protocol != Protocol::Udp || pressure.level == MemoryLevel::Relieved {
            return;
        }
        let (low, mid, high) = pressure.limits;
        let why = format!(
            "UDP memory is at {} pages, past the {} limit of udp_mem ({low} {mid} {high})",
            pressure.pages,
            if pressure.level == MemoryLevel::Exhausted { "high" } else { "pressure" }
        );
        self.raise_memory(self.target(pressure.netns), &why);
    }

    fn raise_memory(&mut self, netns: NetnsId, why: &str) {
        let Some(limits) = self.read(netns, UDP_MEM) else { return };
        let decision = tuner::on_memory_limit(&limits, why, self.learning_rate, system::memory_cap_pages());
        self.carry_out(netns, decision, &[(UDP_MEM, limits)]);
    }

    fn carry_out(&mut self, netns: NetnsId, decision: Decision, current: &[(&str, Vec<i64>)]) {
        match decision {
            Decision::Skip(why) => wasmtune_sdk::trace!("no change in netns {netns}: {why}"),
            Decision::CapReached(name) => {
                if self.said.first(&format!("{netns}/{name}/cap")) {
                    wasmtune_sdk::info!(
                        "{name} in netns {netns} is at its cap and UDP still drops; not raising it further"
                    );
                }
            }
            Decision::Change(change) => {
                if self.overrides.owns(netns, &change.name) {
                    return;
                }
                let key = format!("{netns}/{}", change.name);
                let now = wasmtune_sdk::now();
                let shown = current.iter().find(|(name, _)| *name == change.name).map(|(_, v)| v.as_slice());
                if self.settle.waiting(&key, shown.unwrap_or(&[]), now) {
                    return;
                }
                match change.request(netns) {
                    Ok(()) => self.settle.requested(&key, &change.fields, now),
                    Err(denial) => log_denial(&mut self.said, netns, &change.name, &denial),
                }
            }
        }
    }
}

impl Policy for UdpBuffer {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = UdpBuffer {
            learning_rate: config.learning_rate,
            init_netns: None,
            overrides: Overrides::new(),
            settle: Settle::new(),
            said: LogOnce::new(),
        };
        let events =
            [EventKind::UdpDrop, EventKind::MemoryPressure, EventKind::NamespaceChange, EventKind::AdminOverride];
        Ok((policy, Info::events(&events)))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::UdpDrop(drop) => self.on_drop(drop),
            Event::MemoryPressure(pressure) => self.on_pressure(pressure),
            Event::NamespaceChange(change) => {
                if change.created && change.name == "init" {
                    self.init_netns = Some(change.netns);
                }
                if !change.created {
                    self.overrides.forget_netns(change.netns);
                }
            }
            Event::AdminOverride(taken) => {
                self.overrides.take_over(taken, |s| [RMEM_DEFAULT, RMEM_MAX, UDP_MEM].contains(&s));
            }
            // Drops keep coming while queues stay full.
            Event::Lost(_) => {}
            Event::TcpBufferLimit(_)
            | Event::SynOverflow(_)
            | Event::ConnectionSummary(_)
            | Event::RetransmitBurst(_)
            | Event::BacklogDrops(_)
            | Event::SoftnetSqueeze(_)
            | Event::NeighbourTable(_)
            | Event::RouteTable(_)
            | Event::FragmentMemory(_) => {}
        }
    }
}

wasmtune_sdk::export_policy!(UdpBuffer);
