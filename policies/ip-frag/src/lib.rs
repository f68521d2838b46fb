//! # ip-frag: IP fragment reassembly memory
//!
//! When fragments awaiting reassembly fill `net.ipv4.ipfrag_high_thresh`
//! (`net.ipv6.ip6frag_high_thresh`) to within one learning-rate step, the
//! threshold is raised by a step, up to 64 MiB, per network namespace. When
//! the reassembly failure rate rises together with the threshold
//! (correlation above 0.75), more memory only feeds a fragment flood: the
//! threshold is lowered a step instead, never below its value when first
//! seen. And when 8 raises in a row leave memory full with most fragments
//! still failing, more memory is not helping either (a flood of fragments
//! that never complete fills each raise at once): the threshold goes back to
//! its first value and stays there until reassembly mostly succeeds. The
//! decision is the pure [`tuner`] module.
//!
//! The two families are tuned apart: a threshold this kernel or namespace
//! does not have (`net.ipv6.*` without IPv6) stops only that family, quietly
//! (the host logs once what is missing); a refused read is logged once.

pub mod tuner;

use wasmtune_sdk::{
    Config, Event, EventKind, FragmentMemory, Info, LogOnce, NetnsId, Overrides, Policy, Settle, Tunable, log_denial,
    sysctl,
};

use crate::tuner::{IPV4_HIGH_THRESH, IPV6_HIGH_THRESH, Lanes};

pub struct IpFrag {
    learning_rate: u8,
    lanes: Lanes,
    overrides: Overrides,
    settle: Settle,
    said: LogOnce,
}

impl IpFrag {
    fn on_memory(&mut self, event: &FragmentMemory) {
        let name = tuner::tunable(event.family);
        if self.overrides.owns(event.netns, name) {
            return;
        }
        let current = self.read_integer(event.netns, name);
        let key = format!("{}/{name}", event.netns);
        let now = wasmtune_sdk::now();
        if current.is_some_and(|value| self.settle.waiting(&key, &[value], now)) {
            return;
        }
        let Some(change) = self.lanes.decide(event, current, self.learning_rate) else { return };
        match change.request(event.netns) {
            Ok(()) => self.settle.requested(&key, &change.fields, now),
            Err(denial) => log_denial(&mut self.said, event.netns, name, &denial),
        }
    }

    /// `name` in `netns`, or `None` when there is none to decide with.
    fn read_integer(&mut self, netns: NetnsId, name: &str) -> Option<i64> {
        match sysctl::integer(netns, name) {
            Tunable::Present(value) => Some(value),
            Tunable::Missing(why) => {
                // The host has already said so (`tunable-missing`).
                if self.said.first(&format!("{netns}/{name}/missing")) {
                    wasmtune_sdk::debug!("{why}; {name} is not tuned there");
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

impl Policy for IpFrag {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = IpFrag {
            learning_rate: config.learning_rate,
            lanes: Lanes::default(),
            overrides: Overrides::new(),
            settle: Settle::new(),
            said: LogOnce::new(),
        };
        Ok((policy, Info::events(&[EventKind::FragmentMemory, EventKind::AdminOverride])))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::FragmentMemory(memory) => self.on_memory(memory),
            Event::AdminOverride(taken) => {
                self.overrides.take_over(taken, |s| [IPV4_HIGH_THRESH, IPV6_HIGH_THRESH].contains(&s));
            }
            Event::AdminRelease(released) => {
                self.overrides.release(released);
            }
            // Memory is sampled again on the next event.
            Event::Lost(_) => {}
            Event::TcpBufferLimit(_)
            | Event::MemoryPressure(_)
            | Event::SynOverflow(_)
            | Event::ConnectionSummary(_)
            | Event::RetransmitBurst(_)
            | Event::BacklogDrops(_)
            | Event::SoftnetSqueeze(_)
            | Event::NeighbourTable(_)
            | Event::RouteTable(_)
            | Event::UdpDrop(_)
            | Event::NamespaceChange(_) => {}
        }
    }
}

wasmtune_sdk::export_policy!(IpFrag);
