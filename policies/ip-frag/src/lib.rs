//! # ip-frag: IP fragment reassembly memory
//!
//! When fragments awaiting reassembly fill `net.ipv4.ipfrag_high_thresh`
//! (`net.ipv6.ip6frag_high_thresh`) to within one learning-rate step, the
//! threshold is raised by a step, up to 64 MiB, per network namespace. When
//! the reassembly failure rate rises together with the threshold
//! (correlation above 0.75), more memory only feeds a fragment flood: the
//! threshold is lowered a step instead, never below its value when first
//! seen. And when raises in a row have grown the threshold twelvefold and
//! still leave memory full with most fragments failing, more memory is not
//! helping either (a flood of fragments
//! that never complete fills each raise at once): the threshold goes back to
//! its first value and stays there until reassembly mostly succeeds. The
//! decision is the pure [`tuner`] module.
//!
//! The two families are tuned apart: a threshold this kernel or namespace
//! does not have (`net.ipv6.*` without IPv6) stops only that family, quietly
//! (the host logs once what is missing); a refused read is logged once.

pub mod tuner;

use wasmtune_sdk::{Config, Event, FragmentMemory, Info, Policy, Reading, Tunables};

use crate::tuner::{IPV4_HIGH_THRESH, IPV6_HIGH_THRESH, Lanes};

pub struct IpFrag {
    learning_rate: u8,
    lanes: Lanes,
    tunables: Tunables,
}

impl IpFrag {
    fn on_memory(&mut self, event: &FragmentMemory) {
        let name = tuner::tunable(event.family);
        let Reading::Ready(current) = self.tunables.reading_one(event.netns, name) else { return };
        let Some(change) = self.lanes.decide(event, Some(current), self.learning_rate) else { return };
        // A refusal is said once by `Tunables`; the next event decides again.
        let _ = self.tunables.request(event.netns, &change);
    }
}

impl Policy for IpFrag {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = IpFrag {
            learning_rate: config.learning_rate,
            lanes: Lanes::default(),
            tunables: Tunables::new(&[IPV4_HIGH_THRESH, IPV6_HIGH_THRESH]),
        };
        Ok((policy, Info::events(wasmtune_sdk::declared_events!())))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::FragmentMemory(memory) => self.on_memory(memory),
            // Overrides and namespaces; lost events need no catching up
            // (memory is sampled again on the next event).
            other => self.tunables.observe(other),
        }
    }
}

wasmtune_sdk::export_policy!(IpFrag);
