//! Fixture: a policy that asks, 100 000 times a tick (or the `per-tick`
//! setting), for per-destination
//! settings of another peer each time (10.a.b.c/32, cycling through the
//! whole /8). Every request is within its grant: only the host's global
//! bounds (change budget, peers per policy and namespace, journal size)
//! keep it from taking the host's memory, disk or other policies' turn.

use wasmtune_sdk::tcp::{self, IpPrefix, PeerSettings};
use wasmtune_sdk::{Config, Event, Info, InstantMs, IpAddr, NetnsId, Policy};

/// Calls per tick unless the `per-tick` setting says otherwise.
const PER_TICK: u32 = 100_000;

struct PeerFlood {
    per_tick: u32,
    namespaces: Vec<NetnsId>,
    next: u32,
    accepted: u64,
    refused: u64,
    ticks: u64,
}

impl Policy for PeerFlood {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let per_tick = match config.settings.iter().find(|(key, _)| key == "per-tick") {
            Some((_, value)) => value.parse().map_err(|e| format!("per-tick {value:?}: {e}"))?,
            None => PER_TICK,
        };
        let flood = PeerFlood { per_tick, namespaces: Vec::new(), next: 0, accepted: 0, refused: 0, ticks: 0 };
        Ok((flood, Info::events(&[wasmtune_sdk::EventKind::NamespaceChange]).with_tick_ms(100)))
    }

    fn on_event(&mut self, event: &Event) {
        if let Event::NamespaceChange(change) = event {
            if change.created {
                self.namespaces.push(change.netns);
            } else {
                self.namespaces.retain(|n| *n != change.netns);
            }
        }
    }

    fn on_tick(&mut self, _: InstantMs) {
        let Some(&netns) = self.namespaces.first() else { return };
        for _ in 0..self.per_tick {
            self.next = self.next.wrapping_add(1) & 0x00ff_ffff;
            let [_, a, b, c] = self.next.to_be_bytes();
            let peer = IpPrefix::host(IpAddr::V4((10, a, b, c)));
            let congestion = if self.next % 2 == 0 { "cubic" } else { "reno" };
            let settings = PeerSettings { congestion: Some(congestion.to_string()), ..PeerSettings::none() };
            match tcp::set_peer(netns, peer, settings, "flood", "another peer") {
                Ok(()) => self.accepted += 1,
                Err(_) => self.refused += 1,
            }
        }
        self.ticks += 1;
        if self.ticks % 10 == 0 {
            wasmtune_sdk::info!("peer flood: {} accepted, {} refused", self.accepted, self.refused);
        }
    }
}

wasmtune_sdk::export_policy!(PeerFlood);
