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
//! Each decision needs one tunable, read on its own: without a readable
//! `rmem_default` sockets that sized their own buffer still get a bigger
//! `rmem_max`, and the other way round; `udp_mem` is raised whatever the
//! buffers' state. The host logs once what is missing; a refused read is
//! logged here, once per kind.
//!
//! All three sysctls exist only in the initial namespace, so changes go
//! there whichever namespace the socket lives in. The decisions are the pure
//! [`tuner`] module.

pub mod tuner;

use wasmtune_sdk::{
    Config, Event, EventKind, Info, LogOnce, MemoryLevel, MemoryPressure, NetnsId, Overrides, Policy, Protocol, Settle,
    Tunable, UdpDrop, UdpDropCause, log_denial, sysctl, system,
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

    /// `name` in `netns` as exactly `fields` integers, or `None` when there
    /// is none to decide with: the decision that needs it is skipped.
    fn read(&mut self, netns: NetnsId, name: &str, fields: usize) -> Option<Vec<i64>> {
        match sysctl::integers(netns, name, fields) {
            Tunable::Present(values) => Some(values),
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

    fn read_one(&mut self, netns: NetnsId, name: &str) -> Option<i64> {
        self.read(netns, name, 1).and_then(|values| values.first().copied())
    }

    fn on_drop(&mut self, drop: &UdpDrop) {
        let netns = self.target(drop.netns);
        match drop.cause {
            UdpDropCause::ReceiveQueueFull => {
                let default = self.read_one(netns, RMEM_DEFAULT);
                let max = self.read_one(netns, RMEM_MAX);
                let decision = tuner::on_queue_full(drop, default, max, self.learning_rate);
                let current: Vec<(&str, Vec<i64>)> = [(RMEM_DEFAULT, default), (RMEM_MAX, max)]
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, vec![value?])))
                    .collect();
                self.carry_out(netns, decision, &current);
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
        let Some(limits) = self.read(netns, UDP_MEM, 3) else { return };
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
            Event::AdminRelease(released) => {
                self.overrides.release(released);
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
