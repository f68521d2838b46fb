//! Fixture: a policy that asks, a hundred times a tick, for a sysctl in
//! namespaces that do not exist (cookie u64::MAX and its neighbours). Each
//! answer must be `unknown-netns`, and asking must not make the host rescan
//! namespaces from the policy's thread (which cannot see them all).

use wasmtune_sdk::{Config, Event, Info, InstantMs, Policy, sysctl};

struct NetnsProbe {
    answered: u64,
}

impl Policy for NetnsProbe {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        Ok((NetnsProbe { answered: 0 }, Info::events(&[]).with_tick_ms(100)))
    }

    fn on_event(&mut self, _: &Event) {}

    fn on_tick(&mut self, _: InstantMs) {
        for offset in 0..100 {
            if sysctl::read(u64::MAX - offset, "net.ipv4.tcp_rmem").is_err() {
                self.answered += 1;
            }
        }
        if self.answered % 10_000 == 0 {
            wasmtune_sdk::info!("{} reads of namespaces that do not exist refused", self.answered);
        }
    }
}

wasmtune_sdk::export_policy!(NetnsProbe);
