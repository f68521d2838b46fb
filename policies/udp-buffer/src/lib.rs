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
    Config, Event, Info, Level, MemoryLevel, MemoryPressure, NetnsId, Policy, Protocol, Tunables, UdpDrop,
    UdpDropCause, system,
};

use crate::tuner::{Decision, RMEM_DEFAULT, RMEM_MAX, UDP_MEM};

pub struct UdpBuffer {
    learning_rate: u8,
    tunables: Tunables,
}

impl UdpBuffer {
    /// Where these global sysctls are changed: the initial namespace, or
    /// the event's own until the host has named it.
    fn target(netns: NetnsId) -> NetnsId {
        wasmtune_sdk::init_netns().unwrap_or(netns)
    }

    fn on_drop(&mut self, drop: &UdpDrop) {
        let netns = Self::target(drop.netns);
        match drop.cause {
            UdpDropCause::ReceiveQueueFull => {
                let default = self.tunables.read_one(netns, RMEM_DEFAULT);
                let max = self.tunables.read_one(netns, RMEM_MAX);
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
        self.raise_memory(Self::target(pressure.netns), &why);
    }

    fn raise_memory(&mut self, netns: NetnsId, why: &str) {
        let Some(limits) = self.tunables.read(netns, UDP_MEM, 3) else { return };
        let decision = tuner::on_memory_limit(&limits, why, self.learning_rate, system::memory_cap_pages());
        self.carry_out(netns, decision, &[(UDP_MEM, limits)]);
    }

    /// Carries out `decision`, `current` being the values it was made with:
    /// each decision changes one tunable, held only by its own request on
    /// its way (the other buffer sysctl may still be settling).
    fn carry_out(&mut self, netns: NetnsId, decision: Decision, current: &[(&str, Vec<i64>)]) {
        match decision {
            Decision::Skip(why) => wasmtune_sdk::trace!("no change in netns {netns}: {why}"),
            Decision::CapReached(name) => {
                let message =
                    format!("{name} in netns {netns} is at its cap and UDP still drops; not raising it further");
                self.tunables.say_once(&format!("{netns}/{name}/cap"), Level::Info, &message);
            }
            Decision::Change(change) => {
                let shown = current.iter().find(|(name, _)| *name == change.name).map(|(_, v)| v.as_slice());
                if self.tunables.settling(netns, &change.name, shown.unwrap_or(&[])) {
                    return;
                }
                // Not asked for when the administrator owns it; a refusal is
                // said once by `Tunables`.
                let _ = self.tunables.request(netns, &change);
            }
        }
    }
}

impl Policy for UdpBuffer {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = UdpBuffer {
            learning_rate: config.learning_rate,
            tunables: Tunables::new(&[RMEM_DEFAULT, RMEM_MAX, UDP_MEM]),
        };
        Ok((policy, Info::events(wasmtune_sdk::declared_events!())))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::UdpDrop(drop) => self.on_drop(drop),
            Event::MemoryPressure(pressure) => self.on_pressure(pressure),
            // Overrides and namespaces; lost events need no catching up
            // (drops keep coming while queues stay full).
            other => self.tunables.observe(other),
        }
    }
}

wasmtune_sdk::export_policy!(UdpBuffer);
